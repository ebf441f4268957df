"""The base-model route over several seeds: accuracy and format compliance per stage.

    python benchmarks/base_model_route.py [--seeds 0 1 2] [--output-root runs/base_model_route]

Runs ``recipes/base_model.yaml`` once per seed, every stage's ``seed`` set to it (the stand-in
base's pretraining, the few-shot rollouts, SFT, the rollouts, the pairs and DPO), each seed in its
own output root so that a rerun resumes. Prints greedy accuracy on the 300 held-out problems and
format compliance (answers closed with ``END``) for the base model (few-shot), SFT and DPO, per seed
and as mean ± standard error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posttrain.config import read_yaml
from posttrain.pipeline.runner import run_pipeline
from seed_statistics import mean_and_error

RECIPE = Path(__file__).parents[1] / "recipes" / "base_model.yaml"
EVALS = {"base (few-shot)": "eval_pretrain", "SFT": "eval_sft", "DPO": "eval_dpo"}


def run_seed(seed: int, output_root: Path) -> dict[str, dict]:
    """The recipe with every stage's seed set to ``seed``; the metrics of its three evaluations."""
    recipe = read_yaml(RECIPE)
    for stage in recipe["stages"]:
        if "seed" in stage["config"]:
            stage["config"]["seed"] = seed
    root = output_root / f"seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "base_model.yaml").write_text(json.dumps(recipe, indent=1))  # JSON is YAML
    stages = {s["name"]: s for s in run_pipeline(root / "base_model.yaml", output_root=str(root))["stages"]}
    return {label: stages[name]["metrics"] for label, name in EVALS.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-root", default="runs/base_model_route")
    args = parser.parse_args()
    results = {seed: run_seed(seed, Path(args.output_root)) for seed in args.seeds}

    print(f"\n{'':18s}" + "".join(f"{label:>22s}" for label in EVALS))
    for seed, metrics in results.items():
        print(f"{f'seed {seed}':18s}" + "".join(
            f"{metrics[label]['accuracy']:>12.1%} ({metrics[label]['format_compliance']:4.0%})" for label in EVALS))
    for key in ("accuracy", "format_compliance"):
        summary = [mean_and_error([100 * results[seed][label][key] for seed in args.seeds]) for label in EVALS]
        print(f"{key:18s}" + "".join(f"{f'{mean:.1f} ± {error:.1f}':>22s}" for mean, error in summary))


if __name__ == "__main__":
    main()
