"""Mean ± standard error over seeds, the one summary every multi-seed benchmark prints."""

from __future__ import annotations

import math
import statistics


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, ``stdev / √n`` (0 for a single value)."""
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return statistics.mean(values), error
