"""The robustness suite: bad input, injected faults, sandbox escapes, secrets, load.

Every test's docstring (first line) says what was tried, and the test records what it observed
with the ``outcome`` fixture; ``benchmarks/reliability_report.py`` runs the suite and turns both
into the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import inspect

import pytest


@pytest.fixture
def outcome(request, record_property):
    """``outcome("exit 2: data.jsonl line 3: ...")`` records what the test observed (one line),
    next to the case it tried: the test's docstring (first line) and its parameters' id."""
    doc = inspect.getdoc(request.function) or request.function.__name__
    case = doc.strip().splitlines()[0].rstrip(".")
    callspec = getattr(request.node, "callspec", None)
    record_property("case", case + (f" [{callspec.id}]" if callspec is not None else ""))

    def record(text: str) -> None:
        record_property("outcome", " ".join(str(text).split())[:300])

    return record
