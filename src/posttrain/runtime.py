"""Process-level setup shared by every command: seeding and rank-aware logging."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch


def process_rank() -> int:
    """Global rank of this process under torchrun/accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so runs repeat exactly on the same hardware."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, not to the stream it was created with (which a
    caller that swaps stderr, such as a test capturing output, may since have closed)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def get_logger(name: str) -> logging.Logger:
    """A logger that speaks at INFO on rank 0 and only at WARNING on the other ranks,
    so a multi-process run prints each message once."""
    logger = logging.getLogger(name)
    if not logging.getLogger("posttrain").handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("[posttrain] %(message)s"))
        root = logging.getLogger("posttrain")
        root.addHandler(handler)
        root.propagate = False
        root.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    return logger


def leave_process_group() -> None:
    """Under a launcher, leave the process group before the interpreter exits: gloo's threads
    torn down by the exit itself can abort a process that finished its work (``terminate called
    without an active exception``), and the launcher then reports the whole run failed."""
    if "accelerate" not in sys.modules:  # nothing distributed was started (e.g. --help, make-model)
        return
    from accelerate import PartialState

    if PartialState._shared_state and PartialState().use_distributed:
        PartialState().destroy_process_group()


def sharding_engine(environ: Mapping[str, str] = os.environ) -> str | None:
    """The engine that shards the model's weights over the processes, as ``accelerate launch``
    tells the processes it starts: ``"FSDP"``, ``"DeepSpeed ZeRO-3"``, or None (one process, DDP,
    ZeRO-1/2, which keep whole weights on every process)."""
    if environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "FSDP"
    if environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        if stage is None and environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):  # the stage in DeepSpeed's own file
            stage = str(json.loads(Path(environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).read_text()).get("zero_optimization", {}).get("stage"))
        if stage == "3":
            return "DeepSpeed ZeRO-3"
    return None
