"""Where training rows come from: a local JSONL file, a built-in task, or the Hugging Face Hub.

Every row is paired with a *location* ("data.jsonl:12", "task:arithmetic[3]", "hub:org/name[7]")
so later validation errors can point at it.
"""

from __future__ import annotations

import re
from pathlib import Path

from posttrain.data.jsonl import iter_jsonl
from posttrain.errors import DataError

_SLICE = re.compile(r"^(?P<name>\w+)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def split_slice(split: str) -> tuple[str, slice]:
    """``"train[:1%]"`` -> ``("train", slice)`` resolved later against the row count."""
    match = _SLICE.match(split.strip())
    if match is None:
        raise DataError(f"cannot read split '{split}' (expected e.g. train, train[:100], train[10%:20%])")
    return match["name"], slice(match["start"], match["stop"])


def _resolve(bound: str | None, total: int) -> int | None:
    if bound is None:
        return None
    if bound.endswith("%"):
        return round(total * int(bound[:-1]) / 100)
    return int(bound)


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
    name, part = split_slice(split)
    if dataset_name.startswith("task:"):
        from posttrain.tasks import get_task

        task_name = dataset_name.removeprefix("task:")
        task = get_task(task_name, **(task_options or {}))
        rows = task.make_pairs(name) if preference else task.make_dataset(name)
        located = [(f"{dataset_name}[{i}]", row) for i, row in enumerate(rows)]
    elif dataset_name.endswith((".jsonl", ".json")) or Path(dataset_name).exists():
        located = [(f"{dataset_name}:{number}", row) for number, row in iter_jsonl(dataset_name)]
    else:
        from datasets import load_dataset

        try:
            dataset = load_dataset(dataset_name, split=name)
        except Exception as err:  # datasets raises many types; all mean "cannot load this"
            raise DataError(f"cannot load dataset {dataset_name} split {name}: {str(err).splitlines()[0]}") from None
        located = [(f"{dataset_name}[{i}]", dict(row)) for i, row in enumerate(dataset)]
    total = len(located)
    if not total:
        raise DataError(f"{dataset_name} ({split}): no rows (the dataset is empty)")
    located = located[slice(_resolve(part.start, total), _resolve(part.stop, total))]
    if not located:
        raise DataError(f"{dataset_name}: split '{split}' selects none of its {total} rows")
    return located
