"""``posttrain.cli`` that sends itself a real SIGTERM during one optimizer step, for the preemption
tests (not a test module).

Usage: ``[torchrun ...] sigterm_cli.py COMMAND --key value ...`` with ``SIGTERM_IN_STEP=N``: the
process signals itself (``os.kill(os.getpid(), SIGTERM)``, the signal a scheduler sends) when step
N begins, so the test knows exactly which step the run must finish and checkpoint before it stops.
``SIGTERM_RANK=r`` signals only that process of a multi-process run (default: every process).
``SHARDING_ON_CPU=1``: accelerate selects FSDP or DeepSpeed on these CPU processes (see ``sharding_on_cpu.py``).
"""

from __future__ import annotations

import os
import signal
import sys

from sharding_on_cpu import sharding_on_cpu
from posttrain import cli
from posttrain.trainers.callbacks import MetricsFileCallback

STEP = int(os.environ["SIGTERM_IN_STEP"])
RANK = os.environ.get("SIGTERM_RANK")


def on_step_begin(self, args, state, control, **kwargs):
    if state.global_step == STEP - 1 and RANK in (None, os.environ.get("RANK", "0")):
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    MetricsFileCallback.on_step_begin = on_step_begin  # every posttrain trainer has this callback
    if os.environ.get("SHARDING_ON_CPU") == "1":
        sharding_on_cpu()
    sys.exit(cli.main(sys.argv[1:]))
