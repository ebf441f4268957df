"""Label noise: constant-β DPO vs β-DPO vs quantile β, side by side in one process.

    python benchmarks/dpo_noise.py --sft-model runs/quickstart/sft [--seeds 0 1 2] [--noise 0 0.2 0.4]
        [--methods constant beta_dpo ...] [--pairs 2048] [--dpo '{"num_train_epochs": 2}'] [--out results.json]

The same SFT model is trained on the same verifier-built arithmetic pairs, with a fraction of
the pairs' labels flipped (chosen <-> rejected). For every (noise, method, seed) it reports:

* held-out preference accuracy: on 300 clean test pairs, how often the trained policy's implicit
  reward (log π − log π_ref) ranks the correct solution above the wrong one;
* task accuracy: greedy exact-match on the 300 held-out problems (``posttrain eval``);
* seconds per optimizer step (median over seeds), and its ratio to constant β in the same run.

Means are given with their standard error over seeds; ``--out`` keeps every run's numbers (written
after each run, so a stopped benchmark keeps what it measured) and a PNG of preference accuracy
against noise next to it.

β-DPO's claim (Wu et al. 2024) is robustness to mixed-quality pairs; this shows whether it
holds at this scale. Without --sft-model, the quickstart's model and SFT stages are run first.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from posttrain.artifacts import write_json, write_png
from posttrain.commands.dpo import DPOJobConfig, run_dpo
from posttrain.commands.eval import EvalConfig, run_eval
from posttrain.config import load_config
from posttrain.data.jsonl import write_jsonl
from posttrain.models import free_model, load_model, load_tokenizer, render_prompt
from posttrain.tasks.arithmetic import ArithmeticTask
from seed_statistics import mean_and_error

METHODS = {
    "constant": {"beta_schedule": "constant"},
    "beta_dpo": {"beta_schedule": "beta_dpo"},
    # β-DPO's dynamic β without its filter: separates what each half of the method does
    "beta_dpo_rho1": {"beta_schedule": "beta_dpo", "beta_dpo_rho": 1.0},
    # the default 120-batch warm-up would outlast these short runs; 16 lets the controller act
    "quantile": {"beta_schedule": "quantile", "quantile_warmup_steps": 16},
}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in dict.fromkeys(r["method"] for r in results):
        noises = sorted({r["noise"] for r in results if r["method"] == method})
        stats = [mean_and_error([r["pref_acc"] for r in results if r["method"] == method and r["noise"] == n]) for n in noises]
        ax.errorbar(noises, [m for m, _ in stats], yerr=[e for _, e in stats], marker="o", capsize=3, label=method)
    ax.set(xlabel="share of flipped training labels", ylabel="held-out preference accuracy", title="DPO under label noise")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    write_png(fig, path)


def sequence_logps(model, tokenizer, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """Sum of response-token log-probs of each (chat-rendered prompt, response)."""
    totals = []
    with torch.inference_mode():
        for prompt, response in zip(prompts, responses):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            full = tokenizer(prompt + response + tokenizer.eos_token, add_special_tokens=False, return_tensors="pt")["input_ids"]
            log_probs = torch.log_softmax(model(full).logits[0, :-1].float(), dim=-1)
            targets = full[0, 1:]
            token_logps = log_probs.gather(1, targets[:, None])[:, 0]
            totals.append(token_logps[len(prompt_ids) - 1 :].sum())
    return torch.stack(totals)


def preference_accuracy(policy_dir: str, reference: dict[str, torch.Tensor], pairs: list[dict]) -> float:
    tokenizer, model = load_tokenizer(policy_dir), load_model(policy_dir)
    prompts = [render_prompt(tokenizer, p["prompt"], False) for p in pairs]
    chosen = sequence_logps(model, tokenizer, prompts, [p["chosen"] for p in pairs]) - reference["chosen"]
    rejected = sequence_logps(model, tokenizer, prompts, [p["rejected"] for p in pairs]) - reference["rejected"]
    free_model(model)
    return (chosen > rejected).float().mean().item()


def noisy_pairs(pairs: list[dict], noise: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    flipped = set(rng.sample(range(len(pairs)), round(noise * len(pairs))))
    return [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} if i in flipped else p for i, p in enumerate(pairs)]


def build_sft_model(work: Path) -> str:
    from posttrain.pipeline.runner import run_pipeline

    run_pipeline(Path(__file__).parents[1] / "recipes" / "quickstart.yaml", output_root=str(work))
    return str(work / "quickstart" / "sft")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sft-model", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--pairs", type=int, default=2048)
    parser.add_argument("--methods", nargs="+", default=["constant", "beta_dpo", "quantile"], choices=list(METHODS))
    parser.add_argument("--dpo", default="{}", help="JSON of extra DPO config values (e.g. learning rate)")
    parser.add_argument("--out", default=None, help="results JSON (default: in the work directory); the plot goes next to it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dpo-noise-"))
    out_json = Path(args.out) if args.out else work / "results.json"
    sft = args.sft_model or build_sft_model(work)
    dpo_values = {"learning_rate": 1e-4, "rpo_alpha": 1.0, "warmup_steps": 0.1, "lr_scheduler_type": "cosine",
                  **json.loads(args.dpo)}

    task = ArithmeticTask()
    train_pairs = task.make_pairs("train", n=args.pairs)
    test_pairs = task.make_pairs("test")
    tokenizer, model = load_tokenizer(sft), load_model(sft)
    prompts = [render_prompt(tokenizer, p["prompt"], False) for p in test_pairs]
    reference = {k: sequence_logps(model, tokenizer, prompts, [p[k] for p in test_pairs]) for k in ("chosen", "rejected")}
    free_model(model)
    sft_accuracy = run_eval(load_config(EvalConfig, values={"model_name_or_path": sft, "output_dir": str(work / "eval-sft")}))["accuracy"]

    results = []
    for noise in args.noise:
        for seed in args.seeds:
            data = work / f"pairs-{noise}-{seed}.jsonl"
            write_jsonl(data, noisy_pairs(train_pairs, noise, seed))
            for method in args.methods:
                values = METHODS[method]
                out = work / f"{method}-{noise}-{seed}"
                config = load_config(DPOJobConfig, values={
                    "model_name_or_path": sft, "output_dir": str(out), "dataset_name": str(data), "num_train_epochs": 1,
                    "per_device_train_batch_size": 32, "save_strategy": "no", "logging_steps": 8, "seed": seed,
                    **dpo_values, **values,
                })
                start = time.perf_counter()
                metrics = run_dpo(config)
                seconds_per_step = (time.perf_counter() - start) / metrics["global_step"]
                accuracy = run_eval(load_config(EvalConfig, values={"model_name_or_path": str(out), "output_dir": str(out / "eval")}))["accuracy"]
                results.append({"noise": noise, "seed": seed, "method": method, "pref_acc": preference_accuracy(str(out), reference, test_pairs),
                                "task_acc": accuracy, "sec_per_step": seconds_per_step, "final_beta": metrics["final_beta"]})
                print(json.dumps(results[-1]), flush=True)
                write_json(out_json, results)

    print(f"\nSFT model: task accuracy {sft_accuracy:.3f}; {args.pairs} pairs, seeds {args.seeds}; DPO {dpo_values}")
    print(f"{'noise':>5}  {'method':13} {'pref. acc. ± s.e.':>17} {'task acc. ± s.e.':>17} {'final β':>8} {'s/step':>8} {'vs first':>8}")
    for noise in args.noise:
        # medians: one run disturbed by other work on the machine should not move the ratio
        first = statistics.median(r["sec_per_step"] for r in results if r["noise"] == noise and r["method"] == args.methods[0])
        for method in args.methods:
            rows = [r for r in results if r["noise"] == noise and r["method"] == method]
            pref, pref_error = mean_and_error([r["pref_acc"] for r in rows])
            acc, acc_error = mean_and_error([r["task_acc"] for r in rows])
            step = statistics.median(r["sec_per_step"] for r in rows)
            beta = statistics.mean(r["final_beta"] for r in rows)
            print(f"{noise:5.1f}  {method:13} {pref:9.3f} ±{pref_error:.3f} {acc:9.3f} ±{acc_error:.3f} {beta:8.3f} {step:8.3f} {step / first:8.3f}")
    plot(results, out_json.with_suffix(".png"))
    print(f"\nraw results: {out_json}; plot: {out_json.with_suffix('.png')}")


if __name__ == "__main__":
    main()
