"""JSONL, the one data format posttrain reads and writes.

Reading validates as it goes: a malformed line, a row that is not an object, or a missing or
mistyped field raises :class:`DataError` naming the file, the line and the field. Writing is
atomic (whole file) or append-only with one ``write`` per line (resumable outputs), and a reader
can tolerate a torn last line left by a killed writer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from posttrain.artifacts import atomic_open
from posttrain.errors import DataError


def iter_jsonl(
    path: str | os.PathLike,
    required: Mapping[str, type | tuple[type, ...]] | None = None,
    allow_torn_tail: bool = False,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)`` for each non-blank line of ``path``.

    ``required`` maps field names to the accepted type(s); a row missing one or holding another
    type is an error. With ``allow_torn_tail`` an unparsable *last* line without a trailing
    newline (a writer killed mid-line) is skipped instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as handle:  # line by line: memory does not grow with the file
        for number, raw in enumerate(handle, start=1):
            row = _parse_line(path, number, raw, allow_torn_tail)
            if row is None:
                continue
            _check_fields(path, number, row, required)
            yield number, row


def _parse_line(path: Path, number: int, raw: bytes, allow_torn_tail: bool) -> dict | None:
    """The object on one line (None for a blank line, or a torn last line when allowed)."""
    # only the last line can lack its newline: a writer killed mid-line, possibly inside a character
    torn_tail_allowed = allow_torn_tail and not raw.endswith(b"\n")
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if torn_tail_allowed:
            return None
        raise DataError(f"{path}:{number}: not valid UTF-8 (byte {err.start})") from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        if torn_tail_allowed:
            return None
        raise DataError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise DataError(f"{path}:{number}: invalid JSON (nested too deeply)") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def _check_fields(path: Path, number: int, row: dict, required: Mapping[str, type | tuple[type, ...]] | None) -> None:
    for field, kinds in (required or {}).items():
        if field not in row:
            raise DataError(f"{path}:{number}: missing field '{field}'")
        value = row[field]
        bool_for_number = isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,))
        if bool_for_number or not isinstance(value, kinds):
            names = kinds.__name__ if isinstance(kinds, type) else " or ".join(k.__name__ for k in kinds)
            raise DataError(f"{path}:{number}: field '{field}' must be {names}, got {type(row[field]).__name__}")


def read_jsonl(path: str | os.PathLike, required: Mapping[str, type | tuple[type, ...]] | None = None) -> list[dict]:
    """All rows of ``path`` (see :func:`iter_jsonl`); an empty file is an error."""
    rows = [row for _, row in iter_jsonl(path, required)]
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty)")
    return rows


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write all ``rows`` to ``path`` atomically (a reader never sees a partial file)."""
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def append_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append ``rows`` durably. Each line goes out in one ``write`` followed by ``fsync``, so a
    crash leaves at most one torn last line, which ``iter_jsonl(allow_torn_tail=True)`` skips."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A torn tail from an earlier crash would glue onto the next row: cut it off first.
    if path.exists() and path.stat().st_size:
        _cut_torn_tail(path)
    with open(path, "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _cut_torn_tail(path: Path, block: int = 1 << 16) -> None:
    """Truncate ``path`` after its last newline. Reads only the end of the file (a block at a
    time, backwards, while no newline is found), so appending stays cheap as the file grows."""
    with open(path, "rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return
        stop = end
        while stop > 0:
            start = max(0, stop - block)
            handle.seek(start)
            newline = handle.read(stop - start).rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            stop = start
        handle.truncate(0)  # no complete line at all
