"""Rollouts files (what ``posttrain rollout`` writes) read back, every row checked.

Each row is ``{"id", "prompt", "completions": [...], "fields": {...}, ...}``; the readers stream
the file and check each row as it comes, so memory does not grow with it.
"""

from __future__ import annotations

from collections.abc import Iterator

from posttrain.data.jsonl import iter_jsonl
from posttrain.errors import DataError

ROLLOUT_FIELDS = {"id": str, "prompt": (str, list), "completions": list}


def check_rollout(row: dict, where: str) -> dict:
    """``row`` if its completions are strings and its ``fields`` (if any) an object, else a DataError at ``where``."""
    if not all(isinstance(completion, str) for completion in row["completions"]):
        raise DataError(f"{where}: field 'completions' must be a list of strings")
    if not isinstance(row.get("fields", {}), dict):
        raise DataError(f"{where}: field 'fields' must be an object")
    return row


def checked_rollouts(path: str, required: dict) -> Iterator[tuple[int, dict]]:
    """``(line number, row)`` of every row of a rollouts file, streamed, each checked; an empty
    file is an error."""
    count = 0
    for number, row in iter_jsonl(path, required=required):
        yield number, check_rollout(row, f"{path}:{number}")
        count += 1
    if not count:
        raise DataError(f"{path}: no rows (the file is empty)")
