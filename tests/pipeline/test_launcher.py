"""Pipeline stages under a launcher: the key is checked before anything runs, the launcher's
command line, and real two-process stages (torchrun, CPU gloo) that match one process, keep the
manifest and resume after a SIGTERM to ``posttrain run``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from posttrain.errors import ConfigError
from posttrain.pipeline.launcher import Launcher
from posttrain.pipeline.runner import plan, run_pipeline


def pipeline_file(path: Path, launcher: str, steps: int = 4, batch: int = 4, save: str = "no", model: str = "") -> Path:
    path.write_text(f"""name: launched
stages:
  - name: sft
    command: sft
    {launcher}
    config:
      model_name_or_path: {model}
      dataset_train_split: "train[:64]"
      max_steps: {steps}
      per_device_train_batch_size: {batch}
      learning_rate: 1.0e-3
      logging_steps: 1
      save_strategy: "{save}"
      save_steps: 2
      seed: 0
  - name: eval
    command: eval
    config: {{model_name_or_path: "${{sft}}", num_examples: 4, max_new_tokens: 8}}
""")
    return path


@pytest.mark.parametrize("launcher, message", [
    ("launcher: 2", "'launcher' must be a mapping"),
    ("launcher: {num_processes: 0}", "launcher 'num_processes' must be an integer >= 1, got 0"),
    ("launcher: {num_processes: two}", "launcher 'num_processes' must be an integer >= 1, got 'two'"),
    ("launcher: {processes: 2}", "unknown launcher key 'processes'"),
    ("launcher: {num_processes: 2, config_file: nowhere.yaml}", "launcher config_file .*nowhere.yaml does not exist"),
])
def test_a_bad_launcher_is_an_error_naming_the_stage_before_anything_runs(tmp_path, tiny_model_dir, launcher, message):
    with pytest.raises(ConfigError, match=f"stage 'sft': {message}"):
        run_pipeline(pipeline_file(tmp_path / "p.yaml", launcher, model=tiny_model_dir), output_root=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_evaluations_stay_one_process(tmp_path, tiny_model_dir):
    path = tmp_path / "p.yaml"
    path.write_text(f"stages:\n  - name: eval\n    command: eval\n    launcher: {{num_processes: 2}}\n    config: {{model_name_or_path: {tiny_model_dir}}}\n")
    with pytest.raises(ConfigError, match="stage 'eval': only training stages take a 'launcher'; eval runs in one process"):
        plan(path, output_root=str(tmp_path / "runs"))


def test_the_launchers_command_lines(tmp_path):
    accelerate_config = tmp_path / "fsdp.yaml"
    accelerate_config.write_text("distributed_type: FSDP\n")
    assert Launcher(2).command() == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert Launcher.parse({"num_processes": 8, "config_file": "fsdp.yaml"}, "stage 'x'", tmp_path).command() == [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config), "--num_processes", "8"]


def test_the_process_count_is_part_of_the_fingerprint(tmp_path, tiny_model_dir):
    """N processes × the per-device batch is another global batch: another result."""
    fingerprint = lambda launcher: plan(pipeline_file(tmp_path / "p.yaml", launcher, model=tiny_model_dir), str(tmp_path / "r"))[2][0].fingerprint
    assert fingerprint("") != fingerprint("launcher: {num_processes: 2}") != fingerprint("launcher: {num_processes: 3}")
    assert fingerprint("launcher: {num_processes: 2}") == fingerprint("launcher: {num_processes: 2}")


@pytest.fixture
def cpu_processes(monkeypatch):
    """The launched processes run on the CPU (gloo), one thread each."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
def test_a_two_process_stage_trains_as_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir, cpu_processes):
    one = run_pipeline(pipeline_file(tmp_path / "one.yaml", "", batch=8, model=tiny_model_dir), output_root=str(tmp_path / "one"))
    two = run_pipeline(pipeline_file(tmp_path / "two.yaml", "launcher: {num_processes: 2}", batch=4, model=tiny_model_dir),
                       output_root=str(tmp_path / "two"))
    for manifest in (one, two):
        assert [s["status"] for s in manifest["stages"]] == ["done", "done"]
        assert manifest["stages"][0]["metrics"]["global_step"] == 4  # rank 0's metrics reached the manifest
        assert 0.0 <= manifest["stages"][1]["metrics"]["accuracy"] <= 1.0  # the eval ran, in this process
    weights = [load_file(tmp_path / run / "launched" / "sft" / "model.safetensors") for run in ("one", "two")]
    initial = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert max((weights[0][k] - initial[k]).abs().max().item() for k in initial) > 1e-4  # it trained
    assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in initial) < 1e-5  # ... as one process
    assert two["stages"][0]["metrics"]["train_loss"] == pytest.approx(one["stages"][0]["metrics"]["train_loss"], rel=1e-4)


@pytest.mark.slow
def test_sigterm_to_posttrain_run_stops_the_launched_stage_with_a_checkpoint_and_the_rerun_resumes(tmp_path, tiny_model_dir, cpu_processes):
    pipeline = pipeline_file(tmp_path / "p.yaml", "launcher: {num_processes: 2}", steps=40, save="steps", model=tiny_model_dir)
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "posttrain.cli", "run", str(pipeline), "--output-root", str(runs)]
    log = tmp_path / "run.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    first = runs / "launched" / "sft" / "checkpoint-2" / "posttrain_checkpoint.json"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert first.exists(), log.read_text()[-3000:]
    process.send_signal(signal.SIGTERM)  # to `posttrain run` alone, as a scheduler would
    assert process.wait(timeout=300) == 143, log.read_text()[-3000:]
    manifest = json.loads((runs / "launched" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["interrupted", "pending"]
    # the processes got the signal, finished their step and saved it together (not killed)
    stopped = re.search(r"posttrain sft: stopped by SIGTERM after step (\d+) of 40; checkpoint-(\d+) .* is complete", log.read_text())
    assert stopped and stopped[1] == stopped[2], log.read_text()[-3000:]
    stopped_at = int(stopped[1])
    assert (runs / "launched" / "sft" / f"checkpoint-{stopped_at}" / "posttrain_checkpoint.json").exists() and stopped_at < 40
    assert f"stage 'sft' stopped by SIGTERM on 2 processes" in log.read_text()

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming (interrupted before)" in done.stderr
    manifest = json.loads((runs / "launched" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done", "done"]
    assert manifest["stages"][0]["metrics"]["global_step"] == 40
    state = json.loads((runs / "launched" / "sft" / f"checkpoint-{stopped_at}" / "trainer_state.json").read_text())
    assert state["global_step"] == stopped_at
