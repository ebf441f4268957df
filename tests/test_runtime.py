"""Seeding and rank-aware logging."""

import logging

import numpy as np
import torch

from posttrain.runtime import get_logger, seed_everything


def test_seed_everything_repeats_all_generators():
    import random

    seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def _log_output(rank: str, monkeypatch, capsys) -> str:
    """What a fresh process of this rank prints for one info and one warning message."""
    root = logging.getLogger("posttrain")
    monkeypatch.setattr(root, "handlers", [])  # as in a new process: get_logger sets itself up again
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("RANK", rank)
    capsys.readouterr()
    log = get_logger("posttrain.x")
    log.info("hello-info")
    log.warning("hello-warn")
    return capsys.readouterr().err


def test_info_only_on_rank_zero(monkeypatch, capsys):
    assert "hello-info" in _log_output("0", monkeypatch, capsys) and "hello-warn" in _log_output("0", monkeypatch, capsys)
    other = _log_output("1", monkeypatch, capsys)
    assert "hello-info" not in other and "hello-warn" in other


def test_the_sharding_engine_is_read_as_accelerate_launch_announces_it(tmp_path):
    from posttrain.runtime import sharding_engine

    deepspeed_json = tmp_path / "ds.json"
    deepspeed_json.write_text('{"zero_optimization": {"stage": 3}}')
    assert sharding_engine({}) is None and sharding_engine({"ACCELERATE_USE_FSDP": "false"}) is None
    assert sharding_engine({"ACCELERATE_USE_FSDP": "true"}) == "FSDP" and sharding_engine({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}) == "DeepSpeed ZeRO-3"
    assert sharding_engine({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}) is None  # ZeRO-2 keeps whole weights on every process
    assert sharding_engine({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(deepspeed_json)}) == "DeepSpeed ZeRO-3"
