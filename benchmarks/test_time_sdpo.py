"""Test-time SDPO against best-of-k on problems the model almost never solves: discovery@k over seeds.

    python benchmarks/test_time_sdpo.py [--model DIR] [--seeds 0 1 2] [--problems 20] [--budget 64]
        [--out docs/img/test_time_sdpo.png] [-- extra options for every run]

Without ``--model`` it first trains the SFT model that can read prefix feedback (the quickstart's
``sft`` stage with ``feedback_style: prefix``, 300 held-out problems; see sdpo_vs_grpo.py). Then,
with ``recipes/discover.yaml``'s settings: the start model's pass rate on every held-out problem
from 64 samples (once, seed apart), the first ``--problems`` problems below 3%, and on those, per
seed, best-of-k (``method: sampling``) and test-time SDPO (``method: sdpo``), each with ``--budget``
attempts per problem. Prints discovery@k (share of problems solved within k attempts), mean ±
standard error over seeds, and writes a PNG.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from posttrain.commands.discover import DiscoverConfig, run_discover
from posttrain.config import load_config, parse_overrides
from sdpo_vs_grpo import train_sft
from seed_statistics import mean_and_error, plot_over_seeds

RECIPE = Path(__file__).parents[1] / "recipes" / "discover.yaml"
METHODS = {"best-of-k": "sampling", "test-time SDPO": "sdpo"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="the start model (default: train the prefix-feedback SFT model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--out", default="docs/img/test_time_sdpo.png")
    parser.add_argument("extra", nargs="*", help="more config overrides for every run, as --key value after --")
    args = parser.parse_args()
    overrides = parse_overrides(args.extra)

    with tempfile.TemporaryDirectory() as work:
        start = args.model or train_sft(work, 300, "prefix")

        def discover(method: str, seed: int, out: str, **values) -> dict:
            config = load_config(DiscoverConfig, path=str(RECIPE), overrides=overrides, values={
                "model_name_or_path": start, "output_dir": out, "method": method, "seed": seed,
                "max_problems": args.problems, "budget": args.budget, **values})
            run_discover(config)
            return json.loads((Path(out) / "discovery.json").read_text())

        rates = f"{work}/rates/pass_rates.json"
        runs: dict[str, list[dict]] = {name: [] for name in METHODS}
        for seed in args.seeds:
            for name, method in METHODS.items():
                out = f"{work}/{method}-{seed}"
                reuse = {"pass_rates_from": rates} if Path(rates).exists() else {}
                runs[name].append(discover(method, seed, out, **reuse))
                if not reuse:  # the first run estimated them: every later run attempts the same problems
                    Path(rates).parent.mkdir(exist_ok=True)
                    Path(rates).write_text((Path(out) / "pass_rates.json").read_text())
        chosen = runs["best-of-k"][0]["problems"]

    ks = [int(k) for k in runs["best-of-k"][0]["discovery"]]
    print(f"\n{len(chosen)} problems below 3% pass rate (mean estimated pass rate "
          f"{sum(p['pass_rate'] for p in chosen) / len(chosen):.3f}); {args.budget} attempts each; seeds {args.seeds}\n")
    print("| k | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    curves = {name: [mean_and_error([r["discovery"][str(k)] for r in results]) for k in ks] for name, results in runs.items()}
    for i, k in enumerate(ks):
        print(f"| {k} | " + " | ".join("{:.1f} ± {:.1f}".format(100 * m, 100 * e) for m, e in (c[i] for c in curves.values())) + " |")

    per_seed = {name: [[r["discovery"][str(k)] for k in ks] for r in results] for name, results in runs.items()}
    plot_over_seeds(per_seed, ks, args.out, "attempts per problem (k)", "problems solved within k attempts (%)",
                    f"discovery@k, {len(chosen)} problems with pass rate < 3% ({len(args.seeds)} seeds, ± SE)")

if __name__ == "__main__":
    main()
