"""Preemption: SIGTERM stops a run at a step boundary, with a complete checkpoint at that step.

Cluster schedulers (SLURM, Kubernetes, spot instances) send SIGTERM and wait a grace period
before they kill a job. posttrain turns that signal into a clean stop:

* inside :func:`stoppable_loop` (every training loop, rollouts, pairs) SIGTERM only sets a flag.
  The loop polls :func:`stop_requested` (the HF trainers through
  :class:`~posttrain.trainers.callbacks.StopOnSigterm`, which also makes all processes agree),
  finishes the optimizer step it is in, writes a complete checkpoint at that step and raises
  :class:`Preempted`;
* anywhere else (loading a model, evaluating) SIGTERM raises :class:`Preempted` at once, the way
  Ctrl-C raises KeyboardInterrupt: artifacts are written atomically and resumable stages skip what
  they finished, so nothing done is lost.

The CLI prints the message with how to resume on one line and exits with :data:`EXIT_PREEMPTED`
(143 = 128 + SIGTERM, what a shell reports for a job SIGTERM ended), so schedulers and scripts
see that the run did not finish. A second SIGTERM during the stop is ignored (the first one's
checkpoint is being written); SIGKILL still ends the process at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_PREEMPTED = 128 + signal.SIGTERM


class Preempted(Exception):
    """The run stopped because of SIGTERM; the message says what was saved."""


_requested = False  # a SIGTERM arrived
_loop_depth = 0  # > 0 while a loop that polls stop_requested() is running


def _on_sigterm(signum, frame) -> None:
    global _requested
    already = _requested
    _requested = True
    if _loop_depth == 0 and not already:
        raise Preempted("stopped by SIGTERM")


def stop_requested() -> bool:
    """Whether a SIGTERM has arrived (in this process) since the handler was installed."""
    return _requested


@contextmanager
def sigterm_stops_cleanly() -> Iterator[None]:
    """Install posttrain's SIGTERM handler for the duration (the CLI wraps every command in it).

    Signal handlers can only be set from the main thread; elsewhere this does nothing."""
    global _requested
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is _on_sigterm:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _requested = False
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _requested = False


@contextmanager
def stoppable_loop() -> Iterator[None]:
    """Within: SIGTERM only sets the flag, and the loop stops itself at its next step boundary.

    Installs the handler too, so a loop called from Python (not the CLI) also stops cleanly."""
    global _loop_depth
    with sigterm_stops_cleanly():
        _loop_depth += 1
        try:
            yield
        finally:
            _loop_depth -= 1


def stop_requested_on_any_process() -> bool:
    """:func:`stop_requested`, agreed by every process of a distributed run (a sum over ranks
    through accelerate), so all of them stop after the same step and save one checkpoint together
    even when only one process got the signal."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import reduce

    state = PartialState()
    if state.num_processes == 1:
        return _requested
    flag = torch.tensor([float(_requested)], device=state.device)
    return reduce(flag, reduction="sum").item() > 0
