"""Unit tests for posttrain.generation.sampling.cut_at_stop."""

from __future__ import annotations

import pytest

from posttrain.generation.sampling import cut_at_stop


@pytest.mark.parametrize(
    "text, stops, expected",
    [
        ("Answer: 85\nEND\nmore", ["END"], "Answer: 85\n"),
        ("abc STOP def END ghi", ["END", "STOP"], "abc "),  # earliest wins, not first listed
        ("abc END def STOP", ["STOP", "END"], "abc "),
        ("xxENDyyEND", ["END"], "xx"),  # first occurrence of a stop
        ("ENDstart", ["END"], ""),  # stop at position 0 gives the empty string
        ("abcdef", ["cde", "cd"], "ab"),  # overlapping stops at the same index
        ("no stops here", ["END", "STOP"], "no stops here"),
        ("", ["END"], ""),
    ],
)
def test_cut_at_stop(text, stops, expected):
    """The text is cut before the earliest occurrence of any stop string."""
    assert cut_at_stop(text, stops) == expected


@pytest.mark.parametrize("stops", [None, []])
def test_cut_at_stop_without_stops_returns_text(stops):
    """None or an empty list leaves the text unchanged."""
    assert cut_at_stop("Answer: 1 END", stops) == "Answer: 1 END"
