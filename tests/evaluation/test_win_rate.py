"""Unit tests for posttrain.evaluation.win_rate: counting hand-made verdicts."""

from __future__ import annotations

import pytest

from posttrain.evaluation.win_rate import win_rate
from posttrain.judges.base import Comparison


def verdict(preferred: str, orders_agree: bool | None = None) -> Comparison:
    prob_a = {"a": 0.9, "b": 0.1, "tie": 0.5}[preferred]
    return Comparison(preferred, prob_a, abs(2 * prob_a - 1), orders_agree)


def test_ties_count_half_and_are_reported_apart():
    # 2 wins, 1 loss, 1 tie: (2 + 0.5) / 4
    result = win_rate([verdict("a", True), verdict("b", True), verdict("tie", False), verdict("a", True)])
    assert result == {"win_rate": 0.625, "wins": 2, "losses": 1, "ties": 1, "judge_orders_agree": 0.75}


def test_all_ties_is_an_even_match():
    assert win_rate([verdict("tie"), verdict("tie")])["win_rate"] == 0.5


def test_order_agreement_only_for_judges_that_ask_in_both_orders():
    """A reward model compares scores (no order): no agreement figure is made up for it."""
    assert "judge_orders_agree" not in win_rate([verdict("a"), verdict("b")])
    assert win_rate([verdict("a"), verdict("b")])["win_rate"] == 0.5


def test_no_verdicts_is_an_error():
    with pytest.raises(ValueError):
        win_rate([])
