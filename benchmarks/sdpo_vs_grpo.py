"""Held-out accuracy against generations seen: GRPO vs SDPO from the same SFT model, several seeds.

    python benchmarks/sdpo_vs_grpo.py [--seeds 0 1 2] [--steps 50] [--eval-every 25] [--held-out 1000]
        [--feedback-style step|prefix] [--model DIR | --sft-seed N] [--out docs/img/sdpo_vs_grpo.png]
        [-- extra options for every RL run]

Without ``--model`` it first trains the SFT model every run starts from: the quickstart's ``sft``
stage (80% teacher-format rows, a correct solution or feedback in context, half of the solution
rows with other numbers in the question so that the model learns to read its context; 300 steps at
a constant lr; its seed ``--sft-seed``) with 1,000 held-out problems (``test_size``), and prints
that model's SDPO premise check and how often its samples at the RL temperature succeed (pass@1 of
8) and how often a whole group of 8 fails (1 − pass@8). Every RL run then uses the recipe's settings (``recipes/sdpo.yaml``: 256 completions per
optimizer step, lr warmup, T = 0.3, step-checking verifier) on the task's training problems, and
every ``--eval-every`` steps its checkpoint is evaluated greedily on all held-out problems. Methods
(``--methods``): GRPO, SDPO with the reference settings, and SDPO distilling only up to each
sample's first divergence from its demonstration (``distillation_span: to_divergence``). Prints
mean ± standard error over seeds per checkpoint, and per method the share of groups where every
sample got the same reward (TRL's ``frac_reward_zero_std``: no GRPO signal) beside SDPO's signal
fraction (samples with a teacher context), and writes a PNG with error bars.

``--feedback-style prefix`` words the verifier's feedback as the right solution up to its first
wrong step, in SFT's feedback rows (half of them masked) and in every RL run and eval: the
feedback a tiny model can use (docs/sdpo.md, "Feedback the model can use").
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from posttrain.commands.eval import EvalConfig, run_eval
from posttrain.commands.make_model import MakeModelConfig, make_model
from posttrain.commands.sdpo import SDPOJobConfig, run_sdpo
from posttrain.commands.sft import SFTJobConfig, run_sft
from posttrain.config import load_config, parse_overrides, read_yaml
from seed_statistics import mean_and_error, plot_over_seeds

RECIPE = Path(__file__).parents[1] / "recipes" / "sdpo.yaml"
QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
# logged per run: TRL's share of groups whose samples all got one reward (no GRPO signal), and
# SDPO's share of samples with a teacher context (a successful sibling or feedback)
SIGNALS = {"frac_reward_zero_std": "groups without GRPO signal", "self_distillation/signal_fraction": "SDPO signal fraction"}
METHODS = {
    "GRPO": {"grpo_weight": 1.0},
    "SDPO": {},
    "SDPO to_divergence": {"distillation_span": "to_divergence"},
}


def task_options(args) -> dict:
    return {"test_size": args.held_out, "check_steps": True, "feedback_style": args.feedback_style}


def train_sft(work: str, held_out: int, feedback_style: str, seed: int = 0) -> str:
    """The quickstart's ``sft`` stage (teacher-format rows, 300 steps at a constant lr) from the
    quickstart's tiny model, with ``held_out`` problems held out instead of 300, its feedback rows
    worded in ``feedback_style``, trained with ``seed``."""
    make_model(load_config(MakeModelConfig, values={"out": f"{work}/model", "seed": 0}))
    stage = next(s for s in read_yaml(QUICKSTART)["stages"] if s["name"] == "sft")
    values = {
        **stage["config"], "model_name_or_path": f"{work}/model", "output_dir": f"{work}/sft", "save_strategy": "no", "seed": seed,
        "task_options": {**stage["config"].get("task_options", {}), "test_size": held_out, "feedback_style": feedback_style},
    }
    run_sft(load_config(SFTJobConfig, values=values))
    return f"{work}/sft"


def evaluate(model_dir: str, work: str, args, premise: bool = False, samples_at: float | None = None) -> dict:
    """Greedy accuracy on the held-out problems; with ``premise``, the premise check; with
    ``samples_at`` a temperature, also pass@1 and pass@8 of 8 samples at it (the RL runs' sampling)."""
    options = {"test_size": args.held_out, "feedback_style": args.feedback_style}
    sampling = {"num_samples": 8, "pass_k": [1, 8], "temperature": samples_at} if samples_at else {}
    return run_eval(EvalConfig(model_name_or_path=model_dir, output_dir=work, task_options=options, premise_check=premise, **sampling))


def signal(train_dir: str, key: str) -> float | None:
    """The mean of a logged training metric over a run (None where the run does not log it)."""
    last = max(Path(train_dir).glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    history = json.loads((last / "trainer_state.json").read_text())["log_history"]
    values = [entry[key] for entry in history if key in entry]
    return sum(values) / len(values) if values else None


def curve(args, start: str, overrides: dict, seed: int, work: str) -> tuple[list[float], dict]:
    """Accuracy at eval_every, 2·eval_every, ... steps for one method and seed, and the run's mean
    signal metrics."""
    values = {
        "model_name_or_path": start, "output_dir": f"{work}/train", "max_steps": args.steps,
        "save_strategy": "steps", "save_steps": args.eval_every, "logging_steps": args.eval_every, "seed": seed,
        "task_options": task_options(args), **overrides,
    }
    run_sdpo(load_config(SDPOJobConfig, path=str(RECIPE), values=values, overrides=args.extra))
    accuracy = [evaluate(f"{work}/train/checkpoint-{step}", f"{work}/eval", args)["accuracy"]
                for step in range(args.eval_every, args.steps + 1, args.eval_every)]
    return accuracy, {key: signal(f"{work}/train", key) for key in SIGNALS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="the SFT model every run starts from (default: train one)")
    parser.add_argument("--held-out", type=int, default=1000,
                        help="held-out problems (the task's test_size); with --model, the size that model was trained with")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--feedback-style", choices=["step", "prefix"], default="step",
                        help="the arithmetic task's feedback wording, in SFT, RL and eval")
    parser.add_argument("--sft-seed", type=int, default=0, help="the seed of the SFT model trained without --model")
    parser.add_argument("--out", default="docs/img/sdpo_vs_grpo.png")
    parser.add_argument("extra", nargs="*", help="more config overrides for every RL run, as --key value after --")
    args = parser.parse_args()
    args.extra = parse_overrides(args.extra)

    with tempfile.TemporaryDirectory() as work:
        start = args.model or train_sft(work, args.held_out, args.feedback_style, seed=args.sft_seed)
        per_step = load_config(SDPOJobConfig, path=str(RECIPE), values={"task_options": {}}, overrides=args.extra)
        base = evaluate(start, f"{work}/eval_start", args, premise=True, samples_at=per_step.temperature)
        batch = per_step.per_device_train_batch_size * per_step.gradient_accumulation_steps
        runs = {name: [curve(args, start, METHODS[name], seed, f"{work}/{i}-{seed}") for seed in args.seeds]
                for i, name in enumerate(args.methods)}
    curves = {name: [[base["accuracy"], *accuracy] for accuracy, _ in results] for name, results in runs.items()}
    generations = [step * batch for step in range(0, args.steps + 1, args.eval_every)]

    print(f"\nstart model: greedy {base['accuracy']:.3f} on {base['num_examples']} held-out problems; premise check: "
          + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in base.items() if k.startswith("premise/") and v is not None))
    print(f"start model's samples at T = {per_step.temperature}: {base['pass@1']:.3f} succeed; on {1 - base['pass@8']:.3f} "
          "of the problems all 8 of a group fail")
    print(f"held-out greedy accuracy, mean ± standard error over seeds {args.seeds} ({batch} generations per step)\n")
    print("| generations | " + " | ".join(curves) + " |")
    print("|---|" + "---|" * len(curves))
    for i, seen in enumerate(generations):
        cells = ["{:.1f} ± {:.1f}".format(*(100 * x for x in mean_and_error([run[i] for run in runs]))) for runs in curves.values()]
        print(f"| {seen} | " + " | ".join(cells) + " |")
    print("\nmean over steps and seeds: " + "; ".join(
        f"{name}: " + ", ".join(f"{label} {mean_and_error([m[key] for _, m in results])[0]:.3f}"
                                for key, label in SIGNALS.items() if all(m[key] is not None for _, m in results))
        for name, results in runs.items()))

    plot_over_seeds(curves, generations, args.out, "generations seen", f"held-out accuracy, greedy, {args.held_out} problems (%)",
                    f"GRPO vs SDPO from the same SFT model ({len(args.seeds)} seeds, ± SE)")

if __name__ == "__main__":
    main()
