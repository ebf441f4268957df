"""Win rate of a model against a baseline, from a pairwise judge's verdicts.

Each verdict compares the model's completion (shown as A) with the baseline's (B). The pairwise
judges ask in both orders and average, so a judge that favours a position gives a tie rather than
a win for whichever side it saw first. A tie counts as half a win and is also reported on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from posttrain.judges.base import Comparison

OUTCOME = {"a": "win", "b": "loss", "tie": "tie"}  # a verdict from the model's side


def win_rate(verdicts: Sequence[Comparison]) -> dict:
    """``win_rate`` = (wins + ties / 2) / n, with ``wins``, ``losses``, ``ties`` and, for judges that
    ask in both orders, ``judge_orders_agree``: the share of verdicts where both orders agreed."""
    if not verdicts:
        raise ValueError("no verdicts to count")
    outcomes = [OUTCOME[v.preferred] for v in verdicts]
    wins, losses, ties = (outcomes.count(o) for o in ("win", "loss", "tie"))
    result = {"win_rate": (wins + ties / 2) / len(verdicts), "wins": wins, "losses": losses, "ties": ties}
    agree = [v.orders_agree for v in verdicts if v.orders_agree is not None]
    if agree:
        result["judge_orders_agree"] = sum(agree) / len(agree)
    return result
