"""β-DPO across two processes (torchrun, CPU/gloo) equals one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def dpo_command(model_dir, out, batch):
    return ["-m", "posttrain.cli", "dpo", "--model_name_or_path", model_dir, "--output_dir", str(out),
            "--dataset_name", "task:arithmetic", "--dataset_train_split", "train[:64]", "--max_steps", "4",
            "--per_device_train_batch_size", str(batch), "--learning_rate", "1e-3", "--beta_schedule", "beta_dpo",
            "--save_strategy", "no", "--seed", "0"]


def margins(out):
    return [json.loads(line) for line in (Path(out) / "margins" / "margins.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_the_same_global_batch(tiny_model_dir, tmp_path, free_port):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *dpo_command(tiny_model_dir, tmp_path / "one", 8)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port)]
    double = subprocess.run([*torchrun, *dpo_command(tiny_model_dir, tmp_path / "two", 4)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]

    one, two = margins(tmp_path / "one"), margins(tmp_path / "two")
    assert [r["n"] for r in two] == [8, 8, 8, 8]  # the log holds the gathered global batch
    np.testing.assert_allclose([r["margin"]["mean"] for r in two], [r["margin"]["mean"] for r in one], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose([r["beta"] for r in two], [r["beta"] for r in one], rtol=1e-3)
    assert [r["kept"] for r in two] == [r["kept"] for r in one]
    # every rank used the same β (the trainer checks it each step and would have failed otherwise)
    assert "processes disagree" not in double.stderr
