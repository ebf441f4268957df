"""ECRTM without vs with DPO on topic-word distributions: same seed, same epochs, several seeds.

    python benchmarks/topics_dpo.py [--config recipes/topics.yaml] [--seeds 0 1 2] [-- --key value ...]

"Without" runs the same pipeline with ``dpo_weight: 0`` (the snapshot, the judge and the topic
filter happen, the loss ignores them), so both arms share everything up to the snapshot and the
filtered topics are the same set. Prints TD, C_V, NPMI, purity and NMI for all topics and for the
filtered ones, per seed, on average, and the paired difference with its standard error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from posttrain.config import load_config, parse_overrides
from posttrain.topics.train import TopicsJobConfig, run_topics
from seed_statistics import mean_and_error

KEYS = ("td", "c_v", "npmi", "purity", "nmi")


def run(config_path: str, seed: int, dpo_weight: float | None, extra: dict, work: str) -> dict:
    overrides = {**extra, "seed": seed, "output_dir": f"{work}/seed{seed}-{'dpo' if dpo_weight is None else 'base'}"}
    if dpo_weight is not None:
        overrides["dpo_weight"] = dpo_weight
    config = load_config(TopicsJobConfig, path=config_path, overrides=overrides)
    run_topics(config)
    return json.loads((Path(config.output_dir) / "eval.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="recipes/topics.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("extra", nargs="*", help="more config overrides for both arms, as --key value after --")
    args = parser.parse_args()
    extra = parse_overrides(args.extra)
    results = {"without DPO": [], "with DPO": []}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            results["without DPO"].append(run(args.config, seed, 0.0, extra, work))
            results["with DPO"].append(run(args.config, seed, None, extra, work))
            for arm, rows in results.items():
                row = rows[-1]
                print(f"seed {seed} {arm:12s} all: " + " ".join(f"{k} {row.get(k, float('nan')):.4f}" for k in KEYS)
                      + " | filtered: " + " ".join(f"{k} {row['filtered'].get(k, float('nan')):.4f}" for k in KEYS))

    print(f"\nmean over seeds {args.seeds} (filtered: the topics DPO acted on, {results['with DPO'][0]['filtered']['num_topics']} for seed {args.seeds[0]})")
    print(f"{'':14s}" + "".join(f"{k:>10s}" for k in KEYS) + "   |" + "".join(f"{k:>10s}" for k in KEYS))
    for arm, rows in results.items():
        everything = [statistics.mean(r[k] for r in rows) for k in KEYS]
        filtered = [statistics.mean(r["filtered"][k] for r in rows if k in r["filtered"]) for k in KEYS]
        print(f"{arm:14s}" + "".join(f"{v:10.4f}" for v in everything) + "   |" + "".join(f"{v:10.4f}" for v in filtered))
    # paired by seed: both arms share everything up to the snapshot
    pairs = list(zip(results["without DPO"], results["with DPO"]))
    everything = [mean_and_error([b[k] - a[k] for a, b in pairs]) for k in KEYS]
    filtered = [mean_and_error([b["filtered"][k] - a["filtered"][k] for a, b in pairs if k in a["filtered"]]) for k in KEYS]
    print("\nwith − without DPO, mean ± standard error over seeds")
    print("  all:      " + ", ".join(f"{k} {m:+.4f} ± {e:.4f}" for k, (m, e) in zip(KEYS, everything)))
    print("  filtered: " + ", ".join(f"{k} {m:+.4f} ± {e:.4f}" for k, (m, e) in zip(KEYS, filtered)))


if __name__ == "__main__":
    main()
