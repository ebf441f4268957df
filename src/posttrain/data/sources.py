"""Rows of a local JSONL file or a Hugging Face Hub dataset, and the slice a split selects.

Every row is paired with a *location* ("data.jsonl:12", "hub:org/name[7]") so later validation
errors can point at it. Built-in tasks (``task:<name>``) are a source too; they are resolved
beside the tasks, in :func:`posttrain.tasks.sources.load_rows`, the one entry point that reads
any source.
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


def read_rows(dataset_name: str, split_name: str) -> list[tuple[str, dict]]:
    """Every row of ``dataset_name`` as ``(location, row)`` pairs, unsliced: a ``.jsonl`` file
    (one file is one split: the split name only carries the slice) or a hub dataset id (the
    split ``split_name`` loaded with ``datasets.load_dataset``)."""
    if dataset_name.endswith((".jsonl", ".json")) or Path(dataset_name).exists():
        return [(f"{dataset_name}:{number}", row) for number, row in iter_jsonl(dataset_name)]
    from datasets import load_dataset

    try:
        dataset = load_dataset(dataset_name, split=split_name)
    except Exception as err:  # datasets raises many types; all mean "cannot load this"
        raise DataError(f"cannot load dataset {dataset_name} split {split_name}: {str(err).splitlines()[0]}") from None
    return [(f"{dataset_name}[{i}]", dict(row)) for i, row in enumerate(dataset)]


def slice_rows(located: list[tuple[str, dict]], dataset_name: str, split: str) -> list[tuple[str, dict]]:
    """The rows the slice of ``split`` (``train[:1%]``) selects; no rows, or none selected, is an error."""
    _, part = split_slice(split)
    total = len(located)
    if not total:
        raise DataError(f"{dataset_name} ({split}): no rows (the dataset is empty)")
    located = located[slice(_resolve(part.start, total), _resolve(part.stop, total))]
    if not located:
        raise DataError(f"{dataset_name}: split '{split}' selects none of its {total} rows")
    return located
