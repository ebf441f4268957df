"""Mean ± standard error over seeds, the one summary every multi-seed benchmark prints, and its plot."""

from __future__ import annotations

import math
import statistics


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, ``stdev / √n`` (0 for a single value)."""
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.mean(values), error


def plot_over_seeds(curves: dict[str, list[list[float]]], xs: list, path: str, xlabel: str, ylabel: str, title: str) -> None:
    """One line per method: the mean over its runs (one list of fractions per seed, a value per x)
    in percent, with standard-error bars; written as a PNG to ``path``."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        stats = [mean_and_error([run[i] for run in runs]) for i in range(len(xs))]
        ax.errorbar(xs, [100 * m for m, _ in stats], yerr=[100 * e for _, e in stats], marker="o", capsize=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")
