"""Multi-process training: two CPU processes against one process with the same global batch.

Two processes run under ``torchrun --nproc_per_node 2`` with ``ACCELERATE_USE_CPU=1`` (gloo), each
with ``per_device_train_batch_size`` B; the single process runs with 2·B, so both see the same
examples per optimizer step. They agree up to float32 rounding (the all-reduce sums the two
processes' gradients in another order than one process's batch reduction), which after a few
Adam steps is ~1e-7 relative on the loss; the tolerances below are 10-100x that and far below
what a real difference (a process training on its half alone, a loss normalised per process,
β computed from local margins) produces, and each test checks the compared quantity really moved.

SFT runs the plain CLI (``-m posttrain.cli``); DPO and SDPO run it through ``observed_cli.py``,
which calls the same ``posttrain.cli.main`` and only records what the product writes on rank 0
alone: each rank's β, each rank's teacher.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from posttrain.commands.dpo import DPOJobConfig, build_dpo_trainer
from posttrain.config import load_config
from posttrain.errors import PosttrainError

pytestmark = pytest.mark.slow

OBSERVED_CLI = Path(__file__).with_name("observed_cli.py")
SIGTERM_CLI = Path(__file__).with_name("sigterm_cli.py")


def launch(args: list[str], processes: int, port: int, observe: Path | None = None,
           sigterm: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``posttrain <args>`` in 1 process, or under torchrun with 2; its output goes to
    ``<output_dir>.log`` (the single and the two-process run of a test go side by side).
    ``sigterm``: the environment of ``sigterm_cli.py`` (which step, which rank gets SIGTERM)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    if observe is not None:
        env["OBSERVE_DIR"] = str(observe)
        program = [str(OBSERVED_CLI)]
    elif sigterm is not None:
        env.update(sigterm)
        program = [str(SIGTERM_CLI)]
    else:
        program = ["-m", "posttrain.cli"]
    if processes > 1:
        program = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(port), *program]
    log = Path(args[args.index("--output_dir") + 1]).with_suffix(".log")
    with open(log, "w") as output:
        return subprocess.Popen([sys.executable, *program, *args], stdout=output, stderr=subprocess.STDOUT, env=env)


def finish(*runs: subprocess.Popen) -> None:
    """Wait for the runs (stopping the rest if one hangs); a failed one fails the test with the
    end of its output."""
    try:
        for run in runs:
            run.wait(timeout=600)
    finally:
        for run in runs:
            if run.poll() is None:
                run.terminate()  # torchrun passes it on to its workers
                run.wait(timeout=60)
    for run in runs:
        log = Path(run.args[run.args.index("--output_dir") + 1]).with_suffix(".log")
        assert run.returncode == 0, log.read_text()[-4000:]


def step_rows(out: Path) -> list[dict]:
    """The per-step rows of metrics.jsonl (the final summary row has no ``loss``)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def max_delta(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def saved_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """A saved model's weights; under FSDP2 transformers writes the tied head as a tensor of its
    own, which must then equal the embedding it is tied to."""
    weights = load_file(model_dir / "model.safetensors")
    head = weights.pop("lm_head.weight", None)
    if head is not None and "model.embed_tokens.weight" in weights:
        assert torch.equal(head, weights["model.embed_tokens.weight"])
    return weights


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_two_processes_match_one_also_when_sigterm_on_one_rank_stops_both(tiny_model_dir, tmp_path, free_port, outcome):
    """SFT, 2 processes x 4 vs 1 x 8, the 2 processes stopped by SIGTERM to rank 1 alone in step 2 and resumed: both ranks stop after step 2 with one complete checkpoint; loss at every step and the final weights agree with 1 process.

    Measured: the loss agrees to ~1e-7 relative. Normalising the loss per process instead of over
    the global batch's tokens (``average_tokens_across_devices: false``) moves it by 2e-5 to 1e-4
    relative over these 4 steps, so rtol 1e-5 tells the two apart. A rank that stopped alone would
    leave the other waiting in the next step's collective (a hang, then a timeout), and a rank that
    resumed from another step would change the loss.
    """
    common = ["sft", "--model_name_or_path", tiny_model_dir, "--dataset_name", "task:arithmetic",
              "--dataset_train_split", "train[:64]", "--max_steps", "4", "--learning_rate", "1e-3",
              "--logging_steps", "1", "--save_strategy", "no", "--seed", "0"]
    two_args = [*common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "4"]
    stopped = launch(two_args, 2, free_port, sigterm={"SIGTERM_IN_STEP": "2", "SIGTERM_RANK": "1"})
    finish(launch([*common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8"], 1, free_port))
    stopped.wait(timeout=600)
    log = (tmp_path / "two.log").read_text()
    assert stopped.returncode != 0, log[-3000:]  # torchrun reports its workers' exit status 143
    lines = [line for line in log.splitlines() if line.startswith("posttrain sft: stopped by SIGTERM")]
    assert len(lines) == 1, log[-3000:]  # rank 0 speaks for both
    assert lines[0].startswith(f"posttrain sft: stopped by SIGTERM after step 2 of 4; checkpoint-2 in {tmp_path / 'two'} is complete")
    assert (tmp_path / "two" / "checkpoint-2" / "posttrain_checkpoint.json").exists()
    assert [r["step"] for r in step_rows(tmp_path / "two")] == [1, 2]
    finish(launch([*two_args, "--resume", "true"], 2, free_port))
    assert f"resuming from {tmp_path / 'two' / 'checkpoint-2'}" in (tmp_path / "two.log").read_text()

    one, two = step_rows(tmp_path / "one"), step_rows(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3, 4]  # rank 0 alone writes, each step once
    # the two processes together tokenized exactly the single process's batches
    assert [r["num_tokens"] for r in two] == [r["num_tokens"] for r in one]
    loss_one, loss_two = np.array([r["loss"] for r in one]), np.array([r["loss"] for r in two])
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)

    initial = load_file(Path(tiny_model_dir) / "model.safetensors")
    w_one, w_two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    moved, delta = max_delta(w_one, initial), max_delta(w_two, w_one)
    assert moved > 1e-3  # training changed the weights: the comparison below means something
    assert delta < 1e-4
    outcome(f"SIGTERM to rank 1 in step 2: both ranks stopped after step 2, one checkpoint, exit {stopped.returncode}; "
            f"resumed: max |Δloss| {np.abs(loss_two - loss_one).max():.1e} over 4 steps (loss {loss_one[0]:.2f} → "
            f"{loss_one[-1]:.2f}); max |Δweight| {delta:.1e} (weights moved up to {moved:.1e})")


def test_beta_dpo_two_processes_agree_on_beta_and_match_one(tiny_model_dir, tmp_path, free_port, outcome):
    """β-DPO, 2 processes x 4 pairs vs 1 x 8: both ranks compute the identical β at every update, from the gathered margins; β, margins and loss match one process."""
    common = ["dpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", "task:arithmetic",
              "--dataset_train_split", "train[:64]", "--max_steps", "4", "--learning_rate", "1e-3",
              "--beta_schedule", "beta_dpo", "--logging_steps", "1", "--save_strategy", "no", "--seed", "0"]
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch([*common, "--output_dir", str(one), "--per_device_train_batch_size", "8"], 1, free_port, observe=one / "ranks"),
           launch([*common, "--output_dir", str(two), "--per_device_train_batch_size", "4"], 2, free_port, observe=two / "ranks"))

    rank0, rank1 = jsonl(two / "ranks" / "beta-rank0.jsonl"), jsonl(two / "ranks" / "beta-rank1.jsonl")
    assert len(rank0) == 4 and rank0 == rank1  # every update: the same β and kept count, bit for bit
    single = jsonl(one / "ranks" / "beta-rank0.jsonl")
    betas_one, betas_two = np.array([r["beta"] for r in single]), np.array([r["beta"] for r in rank0])
    assert len(set(betas_one)) == 4  # β moved at every update, so agreeing on it is not trivial
    np.testing.assert_allclose(betas_two, betas_one, rtol=1e-4)

    margins_one = jsonl(one / "margins" / "margins.jsonl")
    margins_two = jsonl(two / "margins" / "margins.jsonl")
    assert [r["update"] for r in margins_two] == [1, 2, 3, 4]  # written once per update, by rank 0
    assert [r["n"] for r in margins_two] == [8] * 4  # the global batch, gathered over both ranks
    assert [r["kept"] for r in margins_two] == [r["kept"] for r in margins_one]
    np.testing.assert_allclose([r["margin"]["mean"] for r in margins_two], [r["margin"]["mean"] for r in margins_one],
                               rtol=1e-3, atol=1e-5)
    loss_one = np.array([r["loss"] for r in step_rows(one)])
    loss_two = np.array([r["loss"] for r in step_rows(two)])
    assert len(loss_two) == 4
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5)
    outcome(f"β equal on both ranks at all 4 updates ({betas_two[0]:.3f} → {betas_two[-1]:.3f}); "
            f"max |Δβ| vs 1 process {np.abs(betas_two - betas_one).max():.1e}, max |Δloss| {np.abs(loss_two - loss_one).max():.1e}")


def test_beta_dpo_stops_when_ranks_disagree_on_beta(tiny_model_dir, tmp_path, outcome):
    """β-DPO's own cross-rank check: a second rank whose β differs by one float step stops training."""
    config = load_config(DPOJobConfig, values=dict(
        model_name_or_path=tiny_model_dir, output_dir=str(tmp_path), dataset_name="task:arithmetic",
        dataset_train_split="train[:8]", per_device_train_batch_size=4, beta_schedule="beta_dpo", seed=0))
    trainer = build_dpo_trainer(config)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    accelerator = trainer.accelerator

    def pretend_two_ranks(rank1_beta_offset: bool):
        """gather as if a second rank held the same margins; its β one float step off if asked."""
        def gather(tensor):
            other = tensor.clone()
            if rank1_beta_offset and tensor.shape == (1,):  # the check's gather of [β]
                other = torch.nextafter(other, other + 1)
            return torch.cat([tensor, other])
        return gather

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(accelerator), "num_processes", property(lambda self: 2))
        patch.setattr(accelerator, "gather", pretend_two_ranks(rank1_beta_offset=False))
        loss = trainer._compute_loss(trainer.model, batch)  # agreeing ranks: trains
        assert math.isfinite(loss.item())
        patch.setattr(accelerator, "gather", pretend_two_ranks(rank1_beta_offset=True))
        with pytest.raises(PosttrainError, match=r"processes disagree on β at step 1") as err:
            trainer._compute_loss(trainer.model, batch)
    outcome(f"agreeing ranks train; β off by one float step on rank 1 → {err.value}")


UNEVEN_FEEDBACK = """
import zlib


def uneven_feedback(prompts, completions, **kwargs):
    \"\"\"Every sample of a prompt with an even checksum gets feedback; of the others only the first:
    groups, and so the processes holding them, distil different numbers of tokens.\"\"\"
    rewards, seen = [], {}
    for prompt in prompts:
        text = str(prompt)
        first = text not in seen
        seen[text] = True
        every = zlib.crc32(text.encode()) % 2 == 0
        rewards.append((0.0, "Check the carry." if every or first else None))
    return rewards
"""


def test_sdpo_two_processes_with_different_token_counts_match_one(tiny_model_dir, tmp_path, free_port, outcome, monkeypatch):
    """SDPO's loss is the token mean of the whole batch on any number of processes: each process
    divides its summed loss by the global count of distilled tokens (TRL's normalisation of its
    token-level GRPO losses), so two processes holding 16 and 4 distilled samples' tokens train
    exactly as one process with both (a per-process token mean would weigh the 4 up)."""
    (tmp_path / "uneven_rewards.py").write_text(UNEVEN_FEEDBACK)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    common = ["sdpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", "task:arithmetic",
              "--dataset_train_split", "train[:16]", "--max_steps", "3", "--learning_rate", "1e-3",
              "--num_generations", "4", "--max_completion_length", "16", "--teacher", "frozen",
              "--reward_functions", '["uneven_rewards:uneven_feedback"]',
              "--trainer_args", '{"generation_kwargs": {"do_sample": false}}',
              "--logging_steps", "1", "--save_strategy", "no", "--seed", "0"]
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch([*common, "--output_dir", str(one), "--per_device_train_batch_size", "8"], 1, free_port),
           launch([*common, "--output_dir", str(two), "--per_device_train_batch_size", "4"], 2, free_port))

    rows_one, rows_two = step_rows(one), step_rows(two)
    assert [r["step"] for r in rows_two] == [1, 2, 3]
    # a step whose two groups (one per process) distil 4 and 1 samples: 5 of 8 have a signal
    assert 0.625 in [r["self_distillation/signal_fraction"] for r in rows_one], rows_one
    for key in ("loss", "self_distillation/loss", "self_distillation/kl", "self_distillation/signal_fraction"):
        np.testing.assert_allclose([r[key] for r in rows_two], [r[key] for r in rows_one], rtol=1e-3, err_msg=key)
    loss_delta = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(rows_two, rows_one))
    initial = load_file(Path(tiny_model_dir) / "model.safetensors")
    student_one = load_file(one / "model.safetensors")
    moved = max_delta({k: student_one[k] for k in initial}, initial)
    student_delta = max_delta(load_file(two / "model.safetensors"), student_one)
    assert moved > 1e-4 and student_delta < 1e-5
    outcome(f"3 steps, signal fractions {[r['self_distillation/signal_fraction'] for r in rows_one]}: max relative |Δloss| "
            f"{loss_delta:.1e}; max |Δstudent| vs 1 process {student_delta:.1e} (moved {moved:.1e})")


def greedy_ema_sdpo_args(tiny_model_dir: str, max_steps: int, learning_rate: float) -> list[str]:
    """``posttrain sdpo`` with an EMA teacher (rate 0.5) and greedy generation, so that every
    process decodes exactly the completions of one process (one group of 8 per step)."""
    return ["sdpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", "task:arithmetic",
            "--dataset_train_split", "train[:16]", "--max_steps", str(max_steps), "--learning_rate", str(learning_rate),
            "--num_generations", "8", "--max_completion_length", "16", "--teacher", "ema",
            "--teacher_update_rate", "0.5", "--trainer_args", '{"generation_kwargs": {"do_sample": false}}',
            "--logging_steps", "1", "--save_strategy", "no", "--seed", "0"]


FSDP2_ON_CPU = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
                "FSDP_TRANSFORMER_CLS_TO_WRAP": "Qwen2DecoderLayer", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
                "SHARDING_ON_CPU": "1"}  # observed_cli.py: accelerate selects FSDP on gloo processes too
ZERO3_ON_CPU = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",  # the student is partitioned as it loads
                "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true",  # as recipes/accelerate/deepspeed_zero3.yaml
                "SHARDING_ON_CPU": "1"}
ENGINES = {"FSDP2": FSDP2_ON_CPU, "DeepSpeed ZeRO-3": ZERO3_ON_CPU}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_sdpo_sharded_ema_teacher_matches_one_process_and_checkpoints_whole(engine, tiny_model_dir, tmp_path, free_port, outcome, monkeypatch):
    """FSDP2 and ZeRO-3, the EMA teacher's model copy: sharded like the student, each process holding half of it.

    Under ZeRO-3 it is built partitioned, since the student is partitioned as it loads. Its EMA
    runs on each process's shards (FSDP2) or on gathered pairs (ZeRO-3), and a checkpoint holds
    the whole teacher. Two processes (under FSDP2 stopped by SIGTERM after step 2 and resumed,
    each loading its shard back) end with the teacher and the student of one process that
    trained 1 x 8 straight through. Under FSDP2 the distillation runs the head outside the forward (chunked);
    ZeRO-3's head is whole only in the forward (full logits, one warning).

    The other teachers under both engines, measured the same way by hand (2026-12-07):
    trust_region's student within 3.6e-6 (FSDP2) and 3.4e-6 (ZeRO-3) of one process; lora_ema's
    teacher within 3.4e-6, resumed, under both; the EMA copy resumed under ZeRO-3 within 3.2e-6.
    Those runs cost 2 minutes of the suite's 15, so CI keeps the EMA copy (the most machinery)
    here and lora_ema's mechanisms in unit tests (tests/trainers/test_teachers.py);
    benchmarks/gpu_check.sh runs every teacher under both engines.
    """
    common = greedy_ema_sdpo_args(tiny_model_dir, max_steps=4, learning_rate=1e-2)
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch([*common, "--output_dir", str(one), "--per_device_train_batch_size", "8"], 1, free_port, observe=one / "ranks"))
    for key, value in ENGINES[engine].items():
        monkeypatch.setenv(key, value)
    halves = [*common, "--output_dir", str(two), "--per_device_train_batch_size", "4"]
    if engine == "FSDP2":  # stopped after step 2, resumed: each process loads its shard back
        run = launch(halves, 2, free_port, sigterm={"SIGTERM_IN_STEP": "2"})
        run.wait(timeout=600)
        assert run.returncode != 0 and (two / "checkpoint-2" / "posttrain_checkpoint.json").exists(), two.with_suffix(".log").read_text()[-3000:]
        finish(launch([*halves, "--resume", "true"], 2, free_port, observe=two / "ranks"))
    else:  # straight through, writing the checkpoint on the way (ZeRO-3's restore: by hand, see above)
        finish(launch([*halves, "--save_strategy", "steps", "--save_steps", "2"], 2, free_port, observe=two / "ranks"))
    saved = torch.load(two / "checkpoint-2" / "sdpo_teacher.pt")

    log = two.with_suffix(".log").read_text()
    assert f"2 process(es) ({engine}); global batch 8" in log  # accelerate's decision, not the environment's
    assert (f"restored the ema teacher from {two / 'checkpoint-2'}" in log) == (engine == "FSDP2")
    assert ("not reproduced outside its forward" in log) == (engine == "DeepSpeed ZeRO-3")
    held = [json.loads((two / "ranks" / f"teacher-rank{r}.json").read_text())["held"] for r in (0, 1)]
    whole = json.loads((one / "ranks" / "teacher-rank0.json").read_text())["held"]
    assert whole <= sum(held) <= 1.01 * whole and max(held) < 0.6 * whole  # ZeRO-3 pads its partitions
    teacher_one, teacher_two = (torch.load(run / "ranks" / "teacher-rank0.pt") for run in (one, two))
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in teacher_one.items()}  # whole, not shards
    moved = max_delta(teacher_two, saved)  # the teacher went on following the student after step 2
    teacher_delta = max_delta(teacher_two, teacher_one)
    student_delta = max_delta(saved_weights(two), saved_weights(one))
    assert moved > 1e-4 and teacher_delta < 1e-5 and student_delta < 1e-5
    np.testing.assert_allclose([r["loss"] for r in step_rows(two)], [r["loss"] for r in step_rows(one)], rtol=1e-3)
    how = "SIGTERM in step 2, resumed to step 4 from" if engine == "FSDP2" else "4 steps straight, writing"
    outcome(f"ema under {engine}: processes hold {held} of {whole} teacher elements; {how} "
            f"a whole checkpoint ({len(saved)} tensors): max |Δteacher| vs 1 x 8 {teacher_delta:.1e} (moved "
            f"{moved:.1e} after step 2), max |Δstudent| {student_delta:.1e}")


def test_sdpo_ema_two_processes_match_one_with_greedy_generation(tiny_model_dir, tmp_path, free_port, outcome):
    """SDPO (EMA teacher), greedy generation, 2 processes x 4 vs 1 x 8 samples: loss per step, student and every rank's teacher agree.

    What can be compared: sampled completions cannot match across world sizes, since each process
    samples from its own RNG stream (TRL seeds per process), so 1 x 8 and 2 x 4 train on different
    completions. With ``generation_kwargs: {do_sample: false}`` every process decodes greedily
    and produces exactly the single process's completions, and the rest of a step (rewards,
    teacher prompts from the gathered group, the EMA after the optimizer step) is deterministic.

    Here both processes hold as many tokens (one group of 8 identical greedy completions per step);
    the test below gives them different counts.
    """
    common = greedy_ema_sdpo_args(tiny_model_dir, max_steps=3, learning_rate=1e-3)
    one, two = tmp_path / "one", tmp_path / "two"
    finish(launch([*common, "--output_dir", str(one), "--per_device_train_batch_size", "8"], 1, free_port, observe=one / "ranks"),
           launch([*common, "--output_dir", str(two), "--per_device_train_batch_size", "4"], 2, free_port, observe=two / "ranks"))

    rows_one, rows_two = step_rows(one), step_rows(two)
    assert [r["step"] for r in rows_two] == [1, 2, 3]
    for r in rows_one + rows_two:
        assert r["completions/min_length"] == r["completions/max_length"]  # equal tokens on both ranks (see above)
        assert r["self_distillation/signal_fraction"] == 1.0  # every sample had a teacher signal
        assert r["loss"] > 0
    for key in ("loss", "self_distillation/loss", "self_distillation/kl"):
        np.testing.assert_allclose([r[key] for r in rows_two], [r[key] for r in rows_one], rtol=1e-3, err_msg=key)
    loss_delta = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(rows_two, rows_one))

    teacher0 = torch.load(two / "ranks" / "teacher-rank0.pt")
    teacher1 = torch.load(two / "ranks" / "teacher-rank1.pt")
    assert all(torch.equal(teacher0[k], teacher1[k]) for k in teacher0)  # the ranks' teachers: bit for bit
    teacher_one = torch.load(one / "ranks" / "teacher-rank0.pt")
    initial = load_file(Path(tiny_model_dir) / "model.safetensors")
    moved = max_delta({k: teacher_one[k] for k in initial}, initial)
    teacher_delta = max_delta(teacher0, teacher_one)
    student_delta = max_delta(load_file(two / "model.safetensors"), load_file(one / "model.safetensors"))
    assert moved > 1e-4  # the EMA teacher followed the student
    assert teacher_delta < 1e-5 and student_delta < 1e-5
    outcome(f"3 steps: max relative |Δloss| {loss_delta:.1e}; teachers of ranks 0 and 1 identical; "
            f"max |Δteacher| vs 1 process {teacher_delta:.1e} (moved {moved:.1e}), max |Δstudent| {student_delta:.1e}")
