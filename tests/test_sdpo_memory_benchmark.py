"""benchmarks/sdpo_memory.py keeps working: one cell of each method, in this process, on the tiny
model, completions of exactly the length asked for."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "sdpo_memory.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("sdpo_memory", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "sdpo", "sdpo-full"])
def test_one_cell_runs_to_the_full_length(benchmark, tmp_path, method):
    model_dir = benchmark.build_model(640, tmp_path)  # the tiny model, its vocabulary resized
    row = benchmark.run_cell(method, str(model_dir), 8, chunk=5, sample=False)
    assert row["method"] == method and row["mean_length"] == 8
    assert row["chunked"] == {"grpo": None, "sdpo": True, "sdpo-full": False}[method]  # the path each stands for
    assert row["peak_bytes"] >= row["loaded_bytes"] > 0 and row["train_seconds"] > 0
