"""Seeding and rank-aware logging."""

import subprocess
import sys

import numpy as np
import torch

from posttrain.runtime import seed_everything


def test_seed_everything_repeats_all_generators():
    import random

    seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def _log_output(rank: str) -> str:
    code = "from posttrain.runtime import get_logger; log = get_logger('posttrain.x'); log.info('hello-info'); log.warning('hello-warn')"
    env = {"RANK": rank, "PATH": ""}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stderr


def test_info_only_on_rank_zero():
    assert "hello-info" in _log_output("0") and "hello-warn" in _log_output("0")
    other = _log_output("1")
    assert "hello-info" not in other and "hello-warn" in other
