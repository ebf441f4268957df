"""Unit tests for posttrain.evaluation.scorers: each rule on hand-worked cases, number reading,
reference checks, and loading and calling a Python verifier."""

from __future__ import annotations

import importlib
import sys

import pytest

from posttrain.errors import ConfigError
from posttrain.evaluation.scorers import (
    check_references,
    contains_match,
    exact_match,
    last_number,
    load_verifier,
    normalize_text,
    numeric_match,
    parse_number,
    reference_reward,
    reference_problem,
    regex_match,
    rule,
    verifier_result,
)


@pytest.mark.parametrize(
    "completion, reference, normalize, expected",
    [
        ("Paris", "Paris", False, 1.0),
        ("  Paris\n", "Paris ", False, 1.0),  # surrounding whitespace never counts
        ("paris", "Paris", False, 0.0),  # case counts unless normalized
        ("paris", "Paris", True, 1.0),
        ("New   York\tCity", "new york city", True, 1.0),  # runs of whitespace are one space
        ("New   York", "New York", False, 0.0),
        ("Paris.", "Paris", True, 0.0),  # punctuation is never dropped
        ("The answer is Paris", "Paris", False, 0.0),  # exact means the whole completion
    ],
)
def test_exact_match(completion, reference, normalize, expected):
    assert exact_match(completion, reference, normalize) == expected


@pytest.mark.parametrize(
    "completion, reference, normalize, expected",
    [
        ("The answer is Paris.", "Paris", False, 1.0),
        ("The answer is Paris.", " Paris ", False, 1.0),  # the reference is stripped
        ("The answer is PARIS.", "paris", False, 0.0),
        ("The answer is PARIS.", "paris", True, 1.0),
        ("The answer\n  is Paris.", "answer is paris", True, 1.0),
        ("The answer is Lyon.", "Paris", True, 0.0),
    ],
)
def test_contains_match(completion, reference, normalize, expected):
    assert contains_match(completion, reference, normalize) == expected


@pytest.mark.parametrize(
    "completion, pattern, expected",
    [
        ("Answer: 85", r"Answer: 8[45]", 1.0),
        ("Answer: 86", r"Answer: 8[45]", 0.0),
        ("so the Answer: 85 it is", r"Answer: 85", 1.0),  # found anywhere ...
        ("so the Answer: 85 it is", r"^Answer: 85$", 0.0),  # ... unless anchored
        ("answer: 85", r"(?i)ANSWER: 85", 1.0),  # flags inside the pattern
    ],
)
def test_regex_match(completion, pattern, expected):
    assert regex_match(completion, pattern) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3+4=7 carry 0. Answer: 85", 85.0),  # the last number, not the first
        ("Answer: 85.", 85.0),  # a full stop is not a decimal point
        ("It costs 1,234.50 dollars", 1234.5),  # thousands separators
        ("between 3 and -4", -4.0),
        ("pages 3-5", 5.0),  # a dash between numbers is no sign
        ("x = 2.5e-3", 0.0025),
        ("about .5 of it", 0.5),
        ("1234,567", 567.0),  # not a thousands pattern: two numbers
        ("no digits here", None),
        ("", None),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


@pytest.mark.parametrize(
    "value, expected",
    [(42, 42.0), (-1.5, -1.5), ("42", 42.0), (" 1,000 ", 1000.0), ("3e2", 300.0),
     ("42 apples", None), ("", None), (True, None), (None, None), ([42], None),
     # GSM8K's gold answers: a worked solution, then "#### <answer>" on the last line
     ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", 72.0), ("It costs 1,200.\n#### 1,200", 1200.0),
     ("#### -3", -3.0), ("a\n#### 72 apples", None), ("a #### b", None), ("score 3\n####", None)],
)
def test_parse_number(value, expected):
    assert parse_number(value) == expected


@pytest.mark.parametrize(
    "completion, reference, tolerance, expected",
    [
        ("Answer: 85", "85", 0.0, 1.0),
        ("Answer: 85", 85, 0.0, 1.0),
        ("Answer: 85.0", "85", 0.0, 1.0),  # equal as numbers
        ("Answer: 84", "85", 0.0, 0.0),
        ("Answer: 84.99", 85, 0.01, 1.0),  # |84.99 - 85| = 0.01 <= 0.01
        ("Answer: 84.98", 85, 0.01, 0.0),  # just outside
        ("Answer: 85, not 84", 85, 0.0, 0.0),  # the last number decides
        ("no number", 85, 100.0, 0.0),
        ("48 + 24 = 72", "48/2 = <<48/2=24>>24\n#### 72", 0.0, 1.0),  # GSM8K: the number after ####, not 24
        ("so 24", "48/2 = <<48/2=24>>24\n#### 72", 0.0, 0.0),
    ],
)
def test_numeric_match(completion, reference, tolerance, expected):
    assert numeric_match(completion, reference, tolerance) == expected


def test_normalize_text():
    assert normalize_text("  New\n\tYORK  city ") == "new york city"


def test_rule_binds_its_option():
    assert rule("exact", normalize=True)("PARIS", "paris") == 1.0
    assert rule("exact")("PARIS", "paris") == 0.0
    assert rule("contains", normalize=True)("the PARIS one", "paris") == 1.0
    assert rule("numeric", tolerance=0.5)("Answer: 9.6", 10) == 1.0
    assert rule("numeric")("Answer: 9.6", 10) == 0.0
    assert rule("regex")("abc", "b") == 1.0
    with pytest.raises(ValueError, match="unknown rule"):
        rule("fuzzy")


@pytest.mark.parametrize(
    "name, reference, problem",
    [
        ("exact", "Paris", None),
        ("exact", 42, "must be a string for the exact scorer, got int"),
        ("contains", "   ", "is empty"),
        ("regex", "8[45]", None),
        ("regex", "8[45", "is not a valid regular expression"),
        ("numeric", "85", None),
        ("numeric", 85.5, None),
        ("numeric", "eighty-five", "must be a number for the numeric scorer, got 'eighty-five'"),
        ("numeric", True, "must be a number"),
    ],
)
def test_reference_problem(name, reference, problem):
    found = reference_problem(name, reference)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


# -- Python verifiers ---------------------------------------------------------------------------------


@pytest.fixture
def verifier_dir(tmp_path, monkeypatch):
    """An empty working directory whose modules ``load_verifier`` may import (forgotten afterwards)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in ("my_checks", "broken_checks"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def test_load_verifier_imports_from_the_working_directory(verifier_dir):
    (verifier_dir / "my_checks.py").write_text(
        "def check(prompt, completion, reference, row):\n"
        "    return completion.strip() == reference, f\"line {row['id']}\"\n"
    )
    importlib.invalidate_caches()
    check = load_verifier("my_checks:check")
    assert check("p", " 7 ", "7", {"id": 3}) == (True, "line 3")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:check", "cannot import module 'no_such_module_xyz'"),
        ("my_checks:missing", "module 'my_checks' has no function 'missing'"),
        ("my_checks:CONSTANT", "module 'my_checks' has no function 'CONSTANT'"),
        ("my_checks:two_args", "my_checks:two_args must accept (prompt, completion, reference, row)"),
        ("my_checks:", "a verifier is written module:function"),
        (":check", "a verifier is written module:function"),
    ],
)
def test_load_verifier_errors_say_what_is_missing(verifier_dir, spec, message):
    (verifier_dir / "my_checks.py").write_text("CONSTANT = 1\ndef two_args(prompt, completion):\n    return 1.0\n")
    importlib.invalidate_caches()
    with pytest.raises(ConfigError, match="config key 'scorer': " + message.replace("(", r"\(").replace(")", r"\)")):
        load_verifier(spec)


def test_load_verifier_keeps_the_error_of_a_module_that_imports_something_missing(verifier_dir):
    """The user's module exists but is broken: its own error (with its traceback) is more useful."""
    (verifier_dir / "broken_checks.py").write_text("import no_such_dependency_xyz\n")
    importlib.invalidate_caches()
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        load_verifier("broken_checks:check")


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, (1.0, None)),
        (False, (0.0, None)),
        (1, (1.0, None)),
        (0.25, (0.25, None)),
        ((0.0, "off by one"), (0.0, "off by one")),
        ((True, None), (1.0, None)),
    ],
)
def test_verifier_result_accepts_rewards_bools_and_feedback(value, expected):
    assert verifier_result(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        (1.5, "returned 1.5; expected a reward in [0, 1]"),
        (-0.1, "returned -0.1"),
        (float("nan"), "returned nan"),
        ("1.0", "returned '1.0'"),
        (None, "returned None"),
        ((1.0, 2), "feedback of type int"),
        ((1.0, "ok", "extra"), "a tuple of 3"),
    ],
)
def test_verifier_result_rejects_anything_else(value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        verifier_result(value)


def test_a_scorer_rule_is_a_reward_against_each_rows_reference():

    numeric = reference_reward("numeric")
    completions = [[{"role": "assistant", "content": "48 + 24 = 72"}], [{"role": "assistant", "content": "so 24"}], "72"]
    gold = "48/2 = <<48/2=24>>24\n#### 72"  # GSM8K: the answer is the number after ####
    assert numeric(prompts=["q"] * 3, completions=completions, reference=[gold, gold, "71"]) == [1.0, 0.0, 0.0]
    assert numeric.__name__ == "numeric"
    assert reference_reward("contains")(prompts=["q"], completions=["it is Paris"], reference=["Paris"]) == [1.0]


def test_references_are_checked_row_by_row_before_training():
    from posttrain.errors import DataError

    check_references("numeric", [("d.jsonl:1", {"prompt": "q", "reference": "x\n#### 3"})])
    with pytest.raises(DataError, match=r"d.jsonl:2: no field 'reference', which reward function 'numeric' compares each "
                                        r"completion with \(the row's columns are prompt, answer; name one with dataset_columns"):
        check_references("numeric", [("d.jsonl:1", {"prompt": "q", "reference": "3"}), ("d.jsonl:2", {"prompt": "q", "answer": "3"})])
    with pytest.raises(DataError, match=r"d.jsonl:1: field 'reference' must be a number for the numeric scorer, got 'three'"):
        check_references("numeric", [("d.jsonl:1", {"prompt": "q", "reference": "three"})])
