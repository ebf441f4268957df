"""How ``posttrain eval`` checks a completion against the reference of a row of the user's JSONL.

Four rules, each a pure function returning 1.0 (right) or 0.0 (wrong):

* ``exact``: the completion equals the reference, both stripped of surrounding whitespace (with
  ``normalize``, also compared in lower case with runs of whitespace made one space);
* ``contains``: the reference appears in the completion (``normalize`` as for ``exact``);
* ``regex``: the reference is a regular expression found anywhere in the completion
  (``re.search``; anchor it, ``^…$``, to match the whole completion);
* ``numeric``: the last number in the completion is within ``tolerance`` of the reference (a
  number, or a worked solution ending in GSM8K's ``#### 42``, whose gold answer is that number).

A Python verifier, named ``module:function``, decides for itself: it is called with the prompt,
the completion, the reference and the whole row, and returns a reward in [0, 1] (a bool counts
as 1 or 0), optionally with a feedback string: ``(reward, feedback)``. It is imported when the
config is read, so a missing module or function is an error before any model loads.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import sys
from functools import partial
from typing import Any, Callable

from posttrain.data.chat import message_text
from posttrain.errors import ConfigError, DataError

RULES = ("exact", "regex", "numeric", "contains")

# An optional sign (not when it joins two numbers, as in "3-5"), digits with optional thousands
# separators, optional decimals, an optional exponent: "-12", "1,234.5", "3e-4", ".5".
_NUMBER = re.compile(r"(?:(?<![\w.])[-+])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def normalize_text(text: str) -> str:
    """Lower case, with every run of whitespace one space and none at the ends."""
    return " ".join(text.lower().split())


def _prepare(text: str, normalize: bool) -> str:
    return normalize_text(text) if normalize else text.strip()


def exact_match(completion: str, reference: str, normalize: bool = False) -> float:
    return float(_prepare(completion, normalize) == _prepare(reference, normalize))


def contains_match(completion: str, reference: str, normalize: bool = False) -> float:
    return float(_prepare(reference, normalize) in _prepare(completion, normalize))


def regex_match(completion: str, pattern: str) -> float:
    return float(re.search(pattern, completion) is not None)


# GSM8K's answers (openai/gsm8k) are a worked solution whose last line is "#### <the answer>".
_GSM8K_ANSWER = re.compile(r"\n?#### *(?P<answer>\S+)\s*$")


def parse_number(value: Any) -> float | None:
    """A reference as a number: a JSON number, a string holding exactly one number ("1,234"), or
    a GSM8K solution ending in ``#### 1,234`` (Cobbe et al., 2021, https://arxiv.org/abs/2110.14168)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return None
    gsm8k = _GSM8K_ANSWER.search(value)
    text = gsm8k["answer"] if gsm8k else value.strip()
    return float(text.replace(",", "")) if _NUMBER.fullmatch(text) else None


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (None when there is none)."""
    numbers = _NUMBER.findall(text)
    return float(numbers[-1].replace(",", "")) if numbers else None


def numeric_match(completion: str, reference: Any, tolerance: float = 0.0) -> float:
    answer, target = last_number(completion), parse_number(reference)
    if answer is None or target is None:
        return 0.0
    # the relative slack absorbs float rounding: 85 - 84.99 is 0.010000000000005 in binary
    return float(abs(answer - target) <= tolerance + 1e-9 * max(abs(answer), abs(target)))


def rule(name: str, normalize: bool = False, tolerance: float = 0.0) -> Callable[[str, Any], float]:
    """The rule ``name`` as ``score(completion, reference)``, with its option bound."""
    if name == "exact":
        return partial(exact_match, normalize=normalize)
    if name == "contains":
        return partial(contains_match, normalize=normalize)
    if name == "regex":
        return regex_match
    if name == "numeric":
        return partial(numeric_match, tolerance=tolerance)
    raise ValueError(f"unknown rule {name!r} (rules: {', '.join(RULES)})")


def reference_problem(name: str, reference: Any) -> str | None:
    """What is wrong with ``reference`` for the rule ``name`` (None when it is usable), so that a
    bad row is reported with its line before any model loads."""
    if name == "numeric":
        return None if parse_number(reference) is not None else f"must be a number for the numeric scorer, got {reference!r}"
    if not isinstance(reference, str):
        return f"must be a string for the {name} scorer, got {type(reference).__name__}"
    if not reference.strip():
        return "is empty"
    if name == "regex":
        try:
            re.compile(reference)
        except re.error as err:
            return f"is not a valid regular expression ({err})"
    return None


def reference_reward(rule_name: str) -> Callable[..., list]:
    """The rule ``rule_name`` as a GRPO/SDPO reward function (``reward_functions: [numeric]``):
    1.0 for a completion that matches its row's ``reference`` column, else 0.0. On openai/gsm8k,
    with ``dataset_columns: {prompt: question, reference: answer}``."""
    score = rule(rule_name)

    def reward(prompts, completions, reference, **kwargs) -> list[float]:
        return [score(message_text(completion), ref) for completion, ref in zip(completions, reference)]

    reward.__name__ = rule_name
    return reward


def check_references(rule_name: str, rows: list[tuple[str, dict]]) -> None:
    """Every prompt row has a ``reference`` the rule can use: a DataError names the first row that
    has none (and its columns) or whose reference the rule cannot use."""
    for where, row in rows:
        if "reference" not in row:
            raise DataError(f"{where}: no field 'reference', which reward function '{rule_name}' compares each completion "
                            f"with (the row's columns are {', '.join(row)}; name one with dataset_columns, e.g. "
                            "{reference: answer})")
        problem = reference_problem(rule_name, row["reference"])
        if problem:
            raise DataError(f"{where}: field 'reference' {problem}")


def load_verifier(spec: str) -> Callable[..., Any]:
    """The function named by ``module:function``, checked to accept (prompt, completion, reference, row).

    The module is imported by name, from the current directory first (as ``python -m`` would),
    then the Python path.
    """
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"config key 'scorer': a verifier is written module:function, got '{spec}'")
    added = os.getcwd() not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
            raise  # the verifier's module was found and itself imports something missing
        raise ConfigError(f"config key 'scorer': cannot import module '{module_name}' for verifier '{spec}'") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"config key 'scorer': module '{module_name}' has no function '{function_name}'")
    try:
        inspect.signature(function).bind("prompt", "completion", "reference", {})
    except TypeError:
        raise ConfigError(f"config key 'scorer': {spec} must accept (prompt, completion, reference, row)") from None
    return function


def verifier_result(value: Any) -> tuple[float, str | None]:
    """A verifier's return value as ``(reward, feedback)``; ValueError when it is neither a reward
    in [0, 1], a bool, nor such a reward paired with a feedback string (or None)."""
    feedback = None
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"returned a tuple of {len(value)}; expected (reward, feedback)")
        value, feedback = value
        if feedback is not None and not isinstance(feedback, str):
            raise ValueError(f"returned feedback of type {type(feedback).__name__}; expected a string or None")
    if isinstance(value, bool):
        return float(value), feedback
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"returned {value!r}; expected a reward in [0, 1], a bool, or (reward, feedback)")
    return float(value), feedback
