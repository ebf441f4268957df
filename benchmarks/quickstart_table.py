"""Does the README's quickstart table say what the quickstart gives? A guard for its figures.

    python benchmarks/quickstart_table.py [--run runs/quickstart] [--readme README.md]

Reads every result figure of the README's table (the rows ``| `stage` | what | result | time |``):
greedy accuracy, pass@k, the premise check's accuracies, the rollouts' completions and the pairs'
counts, and compares each with the run's ``manifest.json``, to the digit the README prints. Exits 1
naming each figure that differs. ``make demo`` runs it after the pipeline: on the README's machine
(2 cores, two torch threads) the table must reproduce bit for bit; elsewhere a difference is a
warning, not a failure of the demo.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
ROW = re.compile(r"^\| `(?P<stage>[a-z_]+)` \| [^|]* \| (?P<result>[^|]*) \|")
# (pattern in the result cell, the metric it is, how the metric is printed)
PERCENT = "{:.1f}"
FIGURES = [
    (r"\baccuracy (\d+\.\d)%", "accuracy", PERCENT),
    (r"\bpass@1 (\d+\.\d)%", "pass@1", PERCENT),
    (r"\bpass@4 (\d+\.\d)%", "pass@4", PERCENT),
    (r"with a correct solution in the prompt (\d+\.\d)%", "premise/demonstration", PERCENT),
    (r"with feedback (\d+\.\d)%", "premise/feedback", PERCENT),
    (r"(\d[\d,]*) completions", "completions", "{:,}"),
    (r"(\d[\d,]*) judged pairs", "prompts_paired", "{:,}"),
    (r"(\d[\d,]*) negatives", "negatives", "{:,}"),
    (r"\((\d[\d,]*) ties", "ties", "{:,}"),
    (r"(\d[\d,]*) prompts with fewer than two distinct samples", "fewer_than_two_distinct", "{:,}"),
    (r"(\d[\d,]*)-token BPE vocabulary", "vocab_size", "{:,}"),
]


def readme_figures(readme: str) -> dict[str, dict[str, str]]:
    """``{stage: {metric: figure as printed}}`` from the README's quickstart table."""
    figures: dict[str, dict[str, str]] = {}
    for line in readme.splitlines():
        if match := ROW.match(line):
            found = {metric: hit.group(1) for pattern, metric, _ in FIGURES if (hit := re.search(pattern, match["result"]))}
            if found:
                figures[match["stage"]] = found
    return figures


def run_value(metrics: dict, metric: str, style: str) -> str | None:
    """The run's value of ``metric``, printed as the README prints it (None: the run lacks it)."""
    if metric == "negatives":
        value = sum(v for k, v in metrics.items() if k.startswith("negatives_")) if "prompts_paired" in metrics else None
    else:
        value = metrics.get(metric)
    if value is None:
        return None
    return style.format(100 * value) if style == PERCENT else style.format(value)


def differences(readme: str, manifest: dict) -> list[str]:
    """One line per README figure the run does not reproduce."""
    stages = {stage["name"]: stage.get("metrics", {}) for stage in manifest["stages"]}
    styles = {metric: style for _, metric, style in FIGURES}
    found = []
    for stage, figures in readme_figures(readme).items():
        for metric, printed in figures.items():
            got = run_value(stages.get(stage, {}), metric, styles[metric])
            if got != printed:
                found.append(f"{stage} {metric}: README says {printed}, the run gives {got if got is not None else 'nothing'}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default="runs/quickstart", help="the quickstart's run directory (with manifest.json)")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args()
    readme = Path(args.readme).read_text()
    manifest = json.loads((Path(args.run) / "manifest.json").read_text())
    count = sum(len(f) for f in readme_figures(readme).values())
    found = differences(readme, manifest)
    if found:
        print(f"the README's quickstart table differs from {args.run} in {len(found)} of {count} figures:")
        print("\n".join(f"  {line}" for line in found))
        return 1
    print(f"the README's quickstart table: all {count} figures reproduced by {args.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
