"""Where training rows come from: a built-in task, a local JSONL file, or the Hugging Face Hub.

``task:<name>`` sources are built here, beside the tasks; files and hub datasets are read by
:mod:`posttrain.data.sources`. Every row is paired with a *location* ("data.jsonl:12",
"task:arithmetic[3]", "hub:org/name[7]") so later validation errors can point at it.
:func:`load_mixture` reads several sources, weighted, as one (``dataset_mixture``).
"""

from __future__ import annotations

from posttrain.data.mixture import mixture_sources, weigh_rows
from posttrain.data.sources import read_rows, rename_columns, slice_rows, split_slice
from posttrain.errors import DataError
from posttrain.runtime import get_logger
from posttrain.tasks import get_task

log = get_logger(__name__)


def load_rows(
    dataset_name: str, split: str = "train", task_options: dict | None = None, preference: bool = False,
    dataset_config: str | None = None, data_files: str | list[str] | dict | None = None, columns: dict[str, str] | None = None,
) -> list[tuple[str, dict]]:
    """Rows of ``dataset_name`` as ``(location, row)`` pairs.

    ``dataset_name`` is a ``.jsonl`` file (one file is one split: the split name only carries
    the slice), ``task:<name>`` (a built-in task's split), or a hub dataset id (loaded with
    ``datasets.load_dataset``; a slice of its top rows is streamed). ``split`` may carry a
    slice: ``train[:1%]``. With ``preference``, a ``task:<name>`` source yields the task's
    verifier-built pairs (prompt/chosen/rejected) instead of its SFT rows. ``dataset_config``
    (a hub subset) and ``data_files`` go to ``datasets.load_dataset``. ``columns`` (``dataset_columns``)
    renames the dataset's columns to posttrain's fields: ``{prompt: question}``.
    """
    if not dataset_name.startswith("task:"):
        return rename_columns(read_rows(dataset_name, split, dataset_config, data_files), columns or {})
    name, _ = split_slice(split)
    task = get_task(dataset_name.removeprefix("task:"), **(task_options or {}))
    rows = task.make_pairs(name) if preference else task.make_dataset(name)
    located = [(f"{dataset_name}[{i}]", row) for i, row in enumerate(rows)]
    return slice_rows(located, dataset_name, split)


def load_mixture(
    mixture: list[dict], seed: int, task_options: dict | None = None, preference: bool = False
) -> list[tuple[str, dict]]:
    """The rows of a ``dataset_mixture``: each source read by :func:`load_rows` and weighted
    (:mod:`posttrain.data.mixture`), concatenated in the mixture's order. The rows keep their
    locations, so a row that does not fit its command's format is an error naming its source."""
    mixed = []
    for index, source in enumerate(mixture_sources(mixture)):
        rows = load_rows(source.name, source.split, task_options, preference, source.config, source.data_files, source.columns)
        weighted = weigh_rows(rows, source.weight, seed, index)
        if not weighted:
            raise DataError(f"dataset_mixture[{index}] {source.name}: weight {source.weight} of its {len(rows)} rows selects none")
        log.info(f"dataset_mixture: {len(weighted)} rows from {source.name} ({source.split}, {len(rows)} rows, weight {source.weight:g})")
        mixed += weighted
    return mixed


def load_train_rows(config, preference: bool = False) -> list[tuple[str, dict]]:
    """The rows a training job reads: its ``dataset_mixture`` when it has one, else the
    ``dataset_train_split`` of its ``dataset_name`` (the keys every training config shares)."""
    if config.dataset_mixture:
        return load_mixture(config.dataset_mixture, config.seed, config.task_options, preference=preference)
    return load_rows(config.dataset_name, config.dataset_train_split, config.task_options, preference=preference,
                     dataset_config=config.dataset_config, data_files=config.data_files, columns=config.dataset_columns)
