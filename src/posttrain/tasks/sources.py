"""Where training rows come from: a built-in task, a local JSONL file, or the Hugging Face Hub.

``task:<name>`` sources are built here, beside the tasks; files and hub datasets are read by
:mod:`posttrain.data.sources`. Every row is paired with a *location* ("data.jsonl:12",
"task:arithmetic[3]", "hub:org/name[7]") so later validation errors can point at it.
"""

from __future__ import annotations

from posttrain.data.sources import read_rows, slice_rows, split_slice
from posttrain.tasks import get_task


def load_rows(
    dataset_name: str, split: str = "train", task_options: dict | None = None, preference: bool = False
) -> list[tuple[str, dict]]:
    """Rows of ``dataset_name`` as ``(location, row)`` pairs.

    ``dataset_name`` is a ``.jsonl`` file (one file is one split: the split name only carries
    the slice), ``task:<name>`` (a built-in task's split), or a hub dataset id (loaded with
    ``datasets.load_dataset``). ``split`` may carry a slice: ``train[:1%]``. With ``preference``,
    a ``task:<name>`` source yields the task's verifier-built pairs (prompt/chosen/rejected)
    instead of its SFT rows.
    """
    name, _ = split_slice(split)
    if dataset_name.startswith("task:"):
        task = get_task(dataset_name.removeprefix("task:"), **(task_options or {}))
        rows = task.make_pairs(name) if preference else task.make_dataset(name)
        located = [(f"{dataset_name}[{i}]", row) for i, row in enumerate(rows)]
    else:
        located = read_rows(dataset_name, name)
    return slice_rows(located, dataset_name, split)
