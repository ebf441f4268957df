"""The robustness suite: bad input, injected faults, sandbox escapes, secrets, load.

Every test's docstring (first line) says what was tried, and the test records what it observed
with the ``outcome`` fixture; ``benchmarks/reliability_report.py`` runs the suite and turns both
into the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def outcome(record_property):
    """``outcome("exit 2: data.jsonl line 3: ...")`` records what the test observed (one line)."""

    def record(text: str) -> None:
        record_property("outcome", " ".join(str(text).split())[:300])

    return record
