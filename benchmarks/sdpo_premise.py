"""SDPO's premise over SFT seeds: does the self-teacher, shown a solution or the verifier's
feedback, beat the student where SDPO uses it?

    python benchmarks/sdpo_premise.py [--seeds 0 1 2] [--held-out 300] [--feedback-style step|prefix]

For each seed it trains the quickstart's ``sft`` stage from the quickstart's tiny model (that seed,
``--held-out`` problems held out, feedback rows worded in ``--feedback-style``) and runs
``posttrain eval --premise_check true`` on the held-out problems: greedy accuracy plain, with a
correct solution and with the feedback on the model's own failed answer in the prompt, and, at the
first wrong step of each failed answer, the share where the teacher puts more probability on the
correct token than the student (``first_error_feedback``, ``first_error_solution``). Prints one row
per seed and the mean ± standard error; the premise holds on a seed when the teacher with feedback
beats the student both there and in greedy accuracy.
"""

from __future__ import annotations

import argparse
import tempfile

from sdpo_vs_grpo import evaluate, train_sft
from seed_statistics import mean_and_error

COLUMNS = {
    "accuracy": "plain",
    "premise/demonstration": "with solution",
    "premise/feedback": "with feedback",
    "premise/first_errors": "first errors",
    "premise/first_error_feedback": "teacher wins, feedback",
    "premise/first_error_solution": "teacher wins, solution",
}
COUNTS = {"premise/first_errors"}


def holds(result: dict) -> bool:
    """The teacher with feedback beats the student at most first errors and in greedy accuracy."""
    return result["premise/first_error_feedback"] > 0.5 and result["premise/feedback"] > result["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--held-out", type=int, default=300)
    parser.add_argument("--feedback-style", choices=["step", "prefix"], default="prefix")
    args = parser.parse_args()

    results = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work:
            start = train_sft(work, args.held_out, args.feedback_style, seed=seed)
            results[seed] = evaluate(start, f"{work}/eval", args, premise=True)

    def cell(key: str, values: list[float]) -> str:
        if key in COUNTS:
            return f"{sum(values) / len(values):.0f}"
        mean, error = mean_and_error(values)
        return f"{100 * mean:.1f} ± {100 * error:.1f}"

    print(f"\nSDPO premise check, feedback style '{args.feedback_style}', {args.held_out} held-out problems\n")
    print("| SFT seed | " + " | ".join(COLUMNS.values()) + " | premise holds |")
    print("|---|" + "---|" * (len(COLUMNS) + 1))
    for seed, result in results.items():
        cells = [f"{result[k]:.0f}" if k in COUNTS else f"{100 * result[k]:.1f}" for k in COLUMNS]
        print(f"| {seed} | " + " | ".join(cells) + f" | {'yes' if holds(result) else 'no'} |")
    summary = [cell(k, [r[k] for r in results.values()]) for k in COLUMNS]
    print("| mean ± s.e. | " + " | ".join(summary) + f" | {sum(map(holds, results.values()))} of {len(results)} |")


if __name__ == "__main__":
    main()
