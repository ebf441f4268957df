"""One pipeline run per output root at a time.

Two ``posttrain run`` processes writing the same stages and manifest would interleave and corrupt
each other's outputs. The first takes an exclusive lock on ``<root>/.run.lock``; a second one is
refused with a line naming the holder. The lock is the kernel's (``flock``), not the file's
existence: it goes away with the process that held it, so a killed run (even SIGKILL, even a
crashed machine's stale file) cannot leave the root locked. Under a launcher each rank locks its
own file (``.run.rank<N>.lock``), so the ranks of one run do not refuse each other and the ranks
of a second run are all refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from posttrain.errors import PosttrainError
from posttrain.runtime import process_rank


def lock_path(root: Path) -> Path:
    rank = process_rank()
    return root / (".run.lock" if rank == 0 else f".run.rank{rank}.lock")


@contextmanager
def pipeline_lock(root: Path) -> Iterator[None]:
    """Hold ``root``'s run lock for the duration; raise :class:`PosttrainError` if another process has it."""
    root.mkdir(parents=True, exist_ok=True)
    path = lock_path(root)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PosttrainError(
                f"{root} is in use by another `posttrain run` ({holder}); wait for it to finish, or use another --output-root"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
