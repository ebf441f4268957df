"""Time per optimizer step of SDPO vs GRPO (and TRL's experimental SDPOTrainer), and the memory
each teacher kind costs — measured side by side in one process.

    python benchmarks/sdpo_step.py [--model runs/quickstart/sft] [--steps 12] [--preset small] [--bf16]

Timing: every trainer runs the same data, seed and generation settings (G samples per prompt,
the same completion length limit) for ``--steps`` optimizer steps; a callback times each step
(generation, rewards, teacher prompts, forward/backward, optimizer) and the first two steps are
discarded as warm-up. Baseline: posttrain's GRPO (TRL's GRPOTrainer, no teacher).

Memory: the teacher's own tensors (parameters and buffers it holds beyond the student), exact
and deterministic, for each teacher kind; with ``--lora`` the student is a LoRA model, which is
where ``lora_ema`` (a second adapter) should cost a small fraction of ``ema`` (a model copy).
Each kind's steps are timed too. On a GPU the script also reports peak allocated memory per
kind; ``--bf16`` trains in bfloat16 mixed precision (GPU; benchmarks/gpu_check.sh uses it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from transformers import TrainerCallback

from posttrain.commands.make_model import MakeModelConfig, make_model
from posttrain.commands.sdpo import SDPOJobConfig, build_sdpo_trainer
from posttrain.trainers.teachers import FrozenTeacher, LoraEMATeacher

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def common(args, model_dir: str, output_dir: str) -> dict:
    return dict(
        model_name_or_path=model_dir, output_dir=output_dir, dataset_name="task:arithmetic",
        dataset_train_split="train[:2000]", max_steps=args.steps, per_device_train_batch_size=args.batch,
        num_generations=args.generations, max_completion_length=args.max_completion_length,
        learning_rate=1e-5, logging_steps=1000, save_strategy="no", seed=0, report_to="none", bf16=args.bf16,
    )


def time_posttrain(args, model_dir: str, **overrides) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        trainer = build_sdpo_trainer(SDPOJobConfig(**{**common(args, model_dir, out), **overrides}))
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
        return timer.times[2:]


def time_trl_experimental(args, model_dir: str) -> list[float]:
    """TRL's experimental SDPOTrainer on the same configuration (top-k 100, α 0.5, tail, EMA teacher)."""
    from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

    from posttrain.commands.sdpo import prompt_dataset
    from posttrain.models import load_model, load_tokenizer
    from posttrain.tasks import get_task
    from posttrain.tasks.sources import load_rows
    from posttrain.trainers.rewards import TaskReward

    verifier = TaskReward(get_task("arithmetic"))

    def arithmetic_reward(prompts, completions, **columns):
        return [reward for reward, _ in verifier(prompts, completions, **columns)]

    with tempfile.TemporaryDirectory() as out:
        config = SDPOConfig(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch, num_generations=args.generations,
            max_completion_length=args.max_completion_length, learning_rate=1e-5, logging_steps=1000, save_strategy="no",
            seed=0, report_to="none", use_cpu=not torch.cuda.is_available(), distillation_mode="topk_logits",
            distillation_topk=100, distillation_alpha=0.5, distillation_add_tail=True, teacher_model_kind="ema",
        )
        timer = StepTimer()
        trainer = SDPOTrainer(
            model=load_model(model_dir), reward_funcs=[arithmetic_reward], args=config,
            train_dataset=prompt_dataset(load_rows("task:arithmetic", "train[:2000]")), processing_class=load_tokenizer(model_dir), callbacks=[timer],
        )
        trainer.train()
        return timer.times[2:]


def teacher_bytes(trainer) -> int:
    """Bytes of tensors the teacher holds beyond the student."""
    teacher = trainer.teacher
    if isinstance(teacher, LoraEMATeacher):  # the second adapter's weights
        return sum(t.numel() * t.element_size() for t, _ in teacher.pairs)
    if isinstance(teacher, FrozenTeacher):  # frozen, ema, trust_region: a model copy
        return sum(t.numel() * t.element_size() for t in teacher.model.state_dict().values())
    return 0  # live, or no teacher


def memory_by_teacher(args, model_dir: str) -> list[tuple[str, int, float | None, float]]:
    """(kind, teacher bytes, peak GPU MiB or None, mean seconds per step after the first) per teacher kind."""
    kinds = ["live", "frozen", "trust_region", "ema"] + (["lora_ema"] if args.lora else [])
    results = []
    for kind in kinds:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as out:
            config = SDPOJobConfig(**{**common(args, model_dir, out), "max_steps": 4}, teacher=kind, use_peft=args.lora)
            trainer = build_sdpo_trainer(config)
            timer = StepTimer()
            trainer.add_callback(timer)
            trainer.train()
            peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
            results.append((kind, teacher_bytes(trainer), peak, statistics.mean(timer.times[1:])))
            del trainer
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="model directory (default: a fresh model of --preset)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32, help="completions per step (batch / generations prompts)")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=40)
    parser.add_argument("--lora", action="store_true", help="memory part: LoRA student (adds lora_ema)")
    parser.add_argument("--skip-trl", action="store_true", help="skip trl.experimental.sdpo")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (GPU)")
    args = parser.parse_args()

    model_dir = args.model or tempfile.mkdtemp(prefix="sdpo-bench-")
    if args.model is None:
        make_model(MakeModelConfig(out=model_dir, preset=args.preset))

    timings = {"GRPO (baseline)": time_posttrain(args, model_dir, grpo_weight=1.0)}
    timings["SDPO (posttrain, ema, top-100)"] = time_posttrain(args, model_dir)
    timings["SDPO + GRPO (λ=0.5)"] = time_posttrain(args, model_dir, grpo_weight=0.5)
    if not args.skip_trl:
        timings["SDPO (trl.experimental, ema, top-100)"] = time_trl_experimental(args, model_dir)
    base = statistics.mean(timings["GRPO (baseline)"])
    print(f"\nseconds per optimizer step ({args.batch} completions, G={args.generations}, {args.steps - 2} timed steps)")
    print(f"{'trainer':40s} {'mean s':>8s} {'median s':>9s} {'vs GRPO':>8s}")
    for name, times in timings.items():
        print(f"{name:40s} {statistics.mean(times):8.3f} {statistics.median(times):9.3f} {statistics.mean(times) / base:7.2f}x")

    print(f"\nteacher memory and step time ({'LoRA' if args.lora else 'full-weight'} student{', bf16' if args.bf16 else ''})")
    print(f"{'teacher':14s} {'teacher MiB':>12s} {'peak GPU MiB':>13s} {'s/step':>8s}")
    for kind, size, peak, seconds in memory_by_teacher(args, model_dir):
        print(f"{kind:14s} {size / 2**20:12.3f} {peak if peak is not None else float('nan'):13.1f} {seconds:8.3f}")


if __name__ == "__main__":
    main()
