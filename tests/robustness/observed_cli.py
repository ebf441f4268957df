"""``posttrain.cli`` with per-rank observation, for test_distributed.py (not a test module).

Usage: ``[torchrun ...] observed_cli.py COMMAND --key value ...`` with ``OBSERVE_DIR`` set.

It runs ``posttrain.cli.main`` unchanged and only records, from *every* process, what the product
writes on rank 0 alone:

* ``beta-rank<r>.jsonl``: each β the β-DPO schedule returned on this rank, one line per update;
* ``teacher-rank<r>.pt``: this rank's SDPO teacher weights after training (a sharded teacher's
  whole weights on rank 0, nothing on the others), and ``teacher-rank<r>.json``: how many of the
  teacher's parameter elements this rank holds (its FSDP2 shards, its ZeRO-3 partitions).

With ``SHARDING_ON_CPU=1`` accelerate selects FSDP or DeepSpeed on these CPU processes (see ``sharding_on_cpu.py``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from sharding_on_cpu import sharding_on_cpu
from posttrain import cli
from posttrain.losses import BetaDPOSchedule
from posttrain.trainers.sdpo import SDPOTrainer
from posttrain.trainers.teachers import _local

OUT = Path(os.environ["OBSERVE_DIR"])
RANK = int(os.environ.get("RANK", "0"))


def observe() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    schedule_step = BetaDPOSchedule.step

    def step(self, *args, **kwargs):
        beta, keep = schedule_step(self, *args, **kwargs)
        with open(OUT / f"beta-rank{RANK}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"beta": float(beta), "kept": int(keep.sum())}) + "\n")
        return beta, keep

    train = SDPOTrainer.train

    def train_and_keep_teacher(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        if self.teacher is not None:
            torch.save(self.teacher.state_dict(), OUT / f"teacher-rank{RANK}.pt")
            if hasattr(self.teacher, "model"):
                held = sum(p.ds_tensor.numel() if hasattr(p, "ds_id") else _local(p).numel() for p in self.teacher.model.parameters())
                (OUT / f"teacher-rank{RANK}.json").write_text(json.dumps({"held": held}))
        return result

    BetaDPOSchedule.step = step
    SDPOTrainer.train = train_and_keep_teacher


if __name__ == "__main__":
    observe()
    if os.environ.get("SHARDING_ON_CPU") == "1":
        sharding_on_cpu()
    sys.exit(cli.main(sys.argv[1:]))
