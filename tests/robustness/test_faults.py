"""Faults: SIGKILL mid-training and mid-save, SIGTERM (preemption), a full disk, a read-only
output directory, NaN losses.

The interruption tests run each trainer through the real CLI straight through, and again
interrupted twice: stopped by SIGTERM (what a scheduler sends before preemption), resumed with the
command it printed, killed there with SIGKILL (no chance to clean up) and resumed again; then
they compare the two loss trajectories step by step. Resuming restores the optimizer, scheduler, RNG
and data order (transformers) plus posttrain's own state (the β-DPO schedule, the EMA teacher),
so the trajectories agree to float noise; anything lost shows up as a different loss.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from posttrain.cli import main as cli_main
from posttrain.preemption import EXIT_PREEMPTED, Preempted
from posttrain.trainers.checkpoints import COMPLETE_FILE

pytestmark = pytest.mark.slow

STEPS = 6
COMMON = ["--max_steps", str(STEPS), "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1",
          "--seed", "0", "--learning_rate", "1e-3"]
JOBS = {
    "sft": ["sft", "--dataset_name", "task:arithmetic", "--dataset_train_split", "train[:48]",
            "--per_device_train_batch_size", "4"],
    "dpo-beta_dpo": ["dpo", "--dataset_name", "task:arithmetic", "--dataset_train_split", "train[:48]",
                     "--per_device_train_batch_size", "4", "--beta_schedule", "beta_dpo"],
    "sdpo-ema": ["sdpo", "--dataset_name", "task:arithmetic", "--dataset_train_split", "train[:32]",
                 "--teacher", "ema", "--num_generations", "4", "--max_completion_length", "12",
                 "--per_device_train_batch_size", "4"],
}
# what each job logs per step that must match between the straight and the resumed run
TRAJECTORY_KEYS = {"sft": ["loss", "grad_norm", "num_tokens"], "dpo-beta_dpo": ["loss", "beta", "rewards/margins"],
                   "sdpo-ema": ["loss", "reward", "self_distillation/kl"]}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "posttrain.cli", *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def trajectory(out: Path, keys: list[str]) -> dict[int, dict]:
    """Step -> the logged training values; a step logged twice would be an error."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    by_step: dict[int, dict] = {}
    for row in rows:
        if "loss" in row and "train_runtime" not in row:
            assert row["step"] not in by_step, f"step {row['step']} logged twice in {out}/metrics.jsonl"
            by_step[row["step"]] = {k: row[k] for k in keys}
    return by_step


def logged_steps(out: Path) -> set[int]:
    path = out / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {json.loads(line)["step"] for line in lines if line.endswith("}")}


def kill_mid_step_after(command: list[str], out: Path, checkpoint_step: int) -> None:
    """Start ``command`` and SIGKILL it once ``checkpoint-<step>`` is complete and the next step
    has been logged, so the log holds a row the checkpoint does not know about."""
    checkpoint = out / f"checkpoint-{checkpoint_step}" / COMPLETE_FILE
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                               start_new_session=True)
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline:
        if checkpoint.exists() and checkpoint_step + 1 in logged_steps(out):
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and checkpoint_step + 1 in logged_steps(out), "the kill should land after the checkpoint"
    assert not (out / "model.safetensors").exists(), "the run finished before the kill"


@pytest.mark.parametrize("job", list(JOBS))
def test_stopped_by_sigterm_then_killed_then_resumed_gives_the_uninterrupted_trajectory(
    job, tiny_model_dir, tmp_path, sigterm_in_step, capsys, outcome
):
    """SIGTERM in step 3; the resume command it printed, SIGKILLed in step 5 with a torn newer checkpoint on disk; --resume true again"""
    # The straight run, the SIGTERM and the last resume run in this process (the CLI's main, as
    # `posttrain` calls it: no interpreter start); the SIGKILL needs a process of its own.
    args = [*JOBS[job], "--model_name_or_path", tiny_model_dir, *COMMON]
    straight, out = tmp_path / "straight", tmp_path / "interrupted"
    assert cli_main([*args, "--output_dir", str(straight)]) == 0

    # 1. SIGTERM (a scheduler's preemption notice, a real signal to this process) in step 3,
    #    between the periodic checkpoints 2 and 4: step 3 finishes and is saved whole with the
    #    trainer's own state; nothing after it runs
    capsys.readouterr()
    with sigterm_in_step(3):
        code = cli_main([*args, "--output_dir", str(out)])
    stderr = capsys.readouterr().err
    assert code == EXIT_PREEMPTED, stderr[-3000:]
    command = JOBS[job][0]
    lines = [line for line in stderr.splitlines() if line.startswith(f"posttrain {command}:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith(f"posttrain {command}: stopped by SIGTERM after step 3 of 6; "
                               f"checkpoint-3 in {out} is complete; resume with: posttrain {command} ")
    assert (out / "checkpoint-3" / COMPLETE_FILE).exists() and not (out / "checkpoint-4").exists()
    assert max(logged_steps(out)) == 3 and not (out / "model.safetensors").exists()
    resume = shlex.split(lines[0].split("resume with: posttrain ", 1)[1])
    assert resume[-2:] == ["--resume", "true"]

    # 2. the printed command resumes from checkpoint-3; SIGKILL (no warning) lands in step 5, after
    #    checkpoint-4, and a save the kill cut short is left on disk: the files transformers writes
    #    first, without the completion marker
    kill_mid_step_after(cli(*resume), out, 4)
    torn = out / "checkpoint-6"
    shutil.rmtree(torn, ignore_errors=True)
    torn.mkdir()
    shutil.copy(out / "checkpoint-4" / "model.safetensors", torn / "model.safetensors")
    steps_before = max(logged_steps(out))

    # 3. resume again: from checkpoint-4, the torn one removed
    assert cli_main(resume) == 0
    stderr = capsys.readouterr().err
    assert f"resuming from {out / 'checkpoint-4'}" in stderr
    assert "checkpoint-6 is incomplete" in stderr

    keys = TRAJECTORY_KEYS[job]
    a, b = trajectory(straight, keys), trajectory(out, keys)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    worst = max(abs(a[s][k] - b[s][k]) / max(1.0, abs(a[s][k])) for s in a for k in keys)
    assert worst < 1e-4, (a, b)
    assert (out / "checkpoint-6" / COMPLETE_FILE).exists()  # the torn one was replaced by a real one
    if job.startswith("dpo"):  # the margin log, too, holds each update once, with the same β
        logs = [[json.loads(line) for line in (run / "margins" / "margins.jsonl").read_text().splitlines()]
                for run in (straight, out)]
        assert [r["update"] for r in logs[1]] == [r["update"] for r in logs[0]] == list(range(1, STEPS + 1))
        assert max(abs(x["beta"] - y["beta"]) for x, y in zip(*logs)) < 1e-4
    outcome(f"exit 143: {lines[0].split(';')[0].split(': ', 1)[1]} (checkpoint-3 complete); its resume command killed "
            f"after step {steps_before} was logged, torn checkpoint-6 removed; resumed again, steps 1-6 match the "
            f"straight run: max relative |Δ| {worst:.1e} over {', '.join(keys)}")


def signal_on_call(owner, name: str, call: int, monkeypatch) -> None:
    """Make ``owner.name`` send this process a real SIGTERM when it is called for the ``call``-th time."""
    original, calls = getattr(owner, name), {"n": 0}

    def signalled(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, signalled)


def test_sigterm_during_rollouts_and_pairs_keeps_what_finished_and_a_rerun_completes(tiny_model_dir, tmp_path, monkeypatch, outcome):
    """SIGTERM while `posttrain rollout` samples its 2nd batch, and while `posttrain pairs` judges its 3rd row"""
    from posttrain.commands import pairs
    from posttrain.commands import rollout as rollouts
    from posttrain.config import load_config

    def rollout_config(out):
        return load_config(rollouts.RolloutConfig, values={
            "model_name_or_path": tiny_model_dir, "output_dir": str(out), "dataset_split": "train[:24]",
            "num_samples": 2, "batch_size": 8, "max_new_tokens": 16, "seed": 0})

    with monkeypatch.context() as patch:
        signal_on_call(rollouts._HFSampler, "__call__", 2, patch)
        with pytest.raises(Preempted, match="16 of 24 prompts"):
            rollouts.run_rollout(rollout_config(tmp_path / "stopped"))
    rows_file = tmp_path / "stopped" / "rollouts.jsonl"
    assert len(rows_file.read_text().splitlines()) == 16  # the batch in flight was written, then it stopped
    assert rollouts.run_rollout(rollout_config(tmp_path / "stopped"))["skipped_done"] == 16
    rollouts.run_rollout(rollout_config(tmp_path / "straight"))
    assert rows_file.read_text() == (tmp_path / "straight" / "rollouts.jsonl").read_text()

    # the untrained model's samples are all wrong (every prompt a tie): pair a right and a wrong
    # solution per prompt instead, so that every row writes pairs
    from posttrain.data.jsonl import write_jsonl
    from posttrain.tasks import get_task

    judged_rows = tmp_path / "judged_rollouts.jsonl"
    write_jsonl(judged_rows, [
        {"id": f"row{i}", "prompt": row["prompt"], "completions": [row["completion"], row["completion"] + "0"],
         "fields": {k: v for k, v in row.items() if k not in ("prompt", "completion")}}
        for i, row in enumerate(get_task("arithmetic").make_dataset("train", n=24))])

    def pairs_config(out):
        return load_config(pairs.PairsConfig, values={"rollouts": str(judged_rows), "output_dir": str(out), "seed": 0})

    with monkeypatch.context() as patch:
        signal_on_call(pairs, "rank", 3, patch)
        with pytest.raises(Preempted, match="after 3 of 24 rollout rows"):
            pairs.run_pairs(pairs_config(tmp_path / "pairs"))
    paired_before = {json.loads(line)["id"] for line in (tmp_path / "pairs" / "pairs.jsonl").read_text().splitlines()}
    summary = pairs.run_pairs(pairs_config(tmp_path / "pairs"))
    pairs.run_pairs(pairs_config(tmp_path / "pairs-straight"))

    def judged(out):
        rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
        assert all(sum(r["id"] == row["id"] for r in rows) == row["rows_for_prompt"] for row in rows)  # none torn or doubled
        return [(r["id"], r["chosen"], r["rejected"]) for r in rows if r["kind"] == "judged"]

    # the 3 rows judged before the stop are not judged again
    assert summary["skipped_done"] == len(paired_before) == 3
    assert judged(tmp_path / "pairs") == judged(tmp_path / "pairs-straight")
    outcome("rollout stopped with 16 of 24 prompts written, the rerun wrote the other 8: file identical to a straight run; "
            f"pairs stopped after 3 of 24 rows, the rerun skipped the {len(paired_before)} paired before: same judged pairs")


# -- disk full, read-only ---------------------------------------------------------------------------


def test_disk_full_while_saving_is_a_one_line_error(tiny_model_dir, tmp_path, outcome):
    """The disk fills up while SFT writes a checkpoint (file-size limit below the model's size)"""
    model_bytes = (Path(tiny_model_dir) / "model.safetensors").stat().st_size

    def small_disk():  # writes past the limit fail with EFBIG, as they fail with ENOSPC on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (model_bytes // 2, model_bytes // 2))

    out = tmp_path / "out"
    done = subprocess.run(cli("sft", "--model_name_or_path", tiny_model_dir, "--dataset_train_split", "train[:16]",
                              "--max_steps", "1", "--output_dir", str(out)),
                          capture_output=True, text=True, env=env(), timeout=600, preexec_fn=small_disk)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("posttrain sft: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    last = errors[0]
    assert last.startswith("posttrain sft: error: cannot write") and str(out) in last and "File too large" in last
    assert not (out / "model.safetensors").exists()
    outcome(f"exit 2: {last.replace(str(tmp_path), '<tmp>')}")


def test_disk_full_maps_to_a_clear_message(tmp_path, monkeypatch, capsys, outcome):
    """ENOSPC raised anywhere in a command (here: by the command itself) is one line, exit 2"""
    import errno

    import posttrain.commands.make_model as command

    def full(config):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out" / "model.safetensors"))

    monkeypatch.setattr(command, "make_model", full)
    code = cli_main(["make-model", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "No space left on device" in err and "model.safetensors" in err
    outcome(f"exit 2: {err.replace(str(tmp_path), '<tmp>')}")


# Root ignores directory permissions, so as root the command runs in a child that first imports
# what it needs (Python itself may live where `nobody` cannot read) and then drops to `nobody`.
AS_NOBODY_IF_ROOT = """
import os, pwd, sys
import posttrain.cli, posttrain.commands.sft, posttrain.artifacts, posttrain.config
if os.geteuid() == 0:
    nobody = pwd.getpwnam("nobody")
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
sys.exit(posttrain.cli.main(sys.argv[1:]))
"""


def test_read_only_output_directory_fails_before_the_model_loads(tiny_model_dir, outcome):
    """The output directory's parent is read-only"""
    base = Path(tempfile.mkdtemp(prefix="posttrain-ro-"))
    try:
        base.chmod(0o755)
        readonly = base / "readonly"
        readonly.mkdir(mode=0o555)
        readonly.chmod(0o555)
        done = subprocess.run([sys.executable, "-c", AS_NOBODY_IF_ROOT, "sft", "--model_name_or_path", tiny_model_dir,
                               "--output_dir", str(readonly / "out"), "--max_steps", "1"],
                              capture_output=True, text=True, env=env(), timeout=300)
        assert done.returncode == 2, done.stderr[-3000:]
        err = done.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert err[0] == f"posttrain sft: error: cannot write {readonly / 'out'}: Permission denied"
        assert list(readonly.iterdir()) == []
        outcome(f"exit 2 before loading the model: {err[0].replace(str(base), '<tmp>')}")
    finally:
        (base / "readonly").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# -- non-finite loss -----------------------------------------------------------------------------


def poison(trainer, bad_forwards) -> None:
    """Make the loss NaN in the training forwards whose number (1, 2, ...) ``bad_forwards`` holds."""
    seen = {"n": 0}

    def hook(module, inputs, output):
        if module.training:
            seen["n"] += 1
            if seen["n"] in bad_forwards:  # TRL's SFT takes its loss from the fused log-probs
                for name in ("loss", "log_probs", "logits"):
                    if getattr(output, name, None) is not None:
                        setattr(output, name, getattr(output, name) * float("nan"))
        return output

    trainer.model.register_forward_hook(hook)


def sft_trainer(tiny_model_dir, out, **values):
    from posttrain.commands.sft import SFTJobConfig, build_sft_trainer
    from posttrain.config import load_config

    config = load_config(SFTJobConfig, values={
        "model_name_or_path": tiny_model_dir, "output_dir": str(out), "dataset_train_split": "train[:32]",
        "per_device_train_batch_size": 4, "max_steps": 5, "logging_steps": 1, "save_strategy": "no", "seed": 0,
        "learning_rate": 1e-3, **values})
    return config, build_sft_trainer(config)


def test_nan_loss_stops_with_the_last_good_state_saved(tiny_model_dir, tmp_path, outcome):
    """The loss turns NaN at step 3 (default: on_nonfinite_loss stop)"""
    from posttrain.errors import PosttrainError
    from posttrain.trainers.loop import train_and_save
    from posttrain.trainers.nonfinite import NonFiniteLossError

    out = tmp_path / "run"
    config, trainer = sft_trainer(tiny_model_dir, out)
    poison(trainer, range(3, 100))
    good = {}

    class Snapshot(TrainerCallback):  # the weights after step 2, the last step with a finite loss
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                good.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    trainer.add_callback(Snapshot())
    with pytest.raises(NonFiniteLossError) as caught:
        train_and_save(trainer, config.output_dir, resume=False)
    assert isinstance(caught.value, PosttrainError)
    message = str(caught.value)
    assert "step 3" in message and "checkpoint-2" in message and "--on_nonfinite_loss skip" in message
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / COMPLETE_FILE).exists()
    from safetensors.torch import load_file

    saved = load_file(checkpoint / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.values())
    for name, tensor in saved.items():
        assert torch.equal(tensor, good[name]), name
    assert not (out / "model.safetensors").exists()  # no final model from a broken run
    outcome(f"PosttrainError: {message.replace(str(tmp_path), '<tmp>')}; checkpoint-2 equals the weights after step 2")


def test_nan_loss_with_skip_trains_on(tiny_model_dir, tmp_path, outcome):
    """The loss is NaN for one batch, with on_nonfinite_loss skip"""
    from posttrain.trainers.loop import train_and_save

    out = tmp_path / "run"
    config, trainer = sft_trainer(tiny_model_dir, out, on_nonfinite_loss="skip")
    poison(trainer, {3})  # only the 3rd batch
    metrics = train_and_save(trainer, config.output_dir, resume=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {row["step"]: row for row in rows if "loss" in row and "train_runtime" not in row}
    assert metrics["global_step"] == 5 and trainer.nonfinite_skipped == 1
    assert logged[5]["nonfinite_skipped"] == 1 and "nonfinite_skipped" not in logged[2]
    from safetensors.torch import load_file

    final = load_file(out / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in final.values())
    outcome(f"5 steps done, 1 batch skipped (metric nonfinite_skipped=1), final weights finite; "
            f"logged loss at the skipped step {logged[3]['loss']}")
