"""Shared fixtures. Everything runs offline on a CPU with the tiny model built here."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A freshly built tiny Qwen2 model directory (built once per test session)."""
    from posttrain.models.tiny import MakeModelConfig, make_model

    out = tmp_path_factory.mktemp("tiny-model")
    make_model(MakeModelConfig(out=str(out), seed=0))
    return str(out)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from posttrain.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)
