"""Atomic writes for every artifact posttrain produces.

A file is written to a temporary sibling, flushed to disk, then renamed over the target, so a
reader (or a resumed run) sees either the old file or the complete new one, never half of it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from posttrain.errors import PosttrainError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise PosttrainError(f"cannot write {path}: {err.strerror}") from err
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get normal permissions
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise PosttrainError(f"cannot write {path}: {err.strerror}") from err
        raise


def check_writable(directory: str | os.PathLike) -> None:
    """Fail now, before a model loads, if ``directory`` cannot be created or written to.

    Probes the directory, or its nearest existing ancestor, with a temporary file that is removed
    at once, so a failed command leaves nothing behind.
    """
    path = Path(directory).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PosttrainError(f"cannot write {path}: {existing} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".posttrain-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PosttrainError(f"cannot write {path}: {err.strerror}") from err


# Writes that fail for these reasons are the machine's state (a full disk, a read-only mount),
# not a bug in posttrain: they deserve one line, not a traceback.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def describe_write_failure(err: BaseException, output_dir: str | None) -> str | None:
    """"cannot write PATH: REASON" when ``err`` (or an exception it came from) is a failed write,
    else None. Libraries report the same failure differently: OSError (Python), "... (os error
    28)" (safetensors) or "file write failed" (torch.save)."""
    output_dir = output_dir or "the output directory"
    while err is not None:
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return f"cannot write {err.filename or output_dir}: {err.strerror}"
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code and int(code[1]) in WRITE_ERRNOS:
            return f"cannot write {output_dir}: {os.strerror(int(code[1]))}"
        if "file write failed" in str(err):
            return f"cannot write {output_dir}: the write failed (is the disk full?)"
        err = err.__cause__ or err.__context__
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=str)
        handle.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text``, atomically."""
    with atomic_open(path) as handle:
        handle.write(text)


def write_png(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Lay out a matplotlib figure, write it as a PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    plt.close(fig)
