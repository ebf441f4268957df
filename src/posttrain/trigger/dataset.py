"""Trigger-conditioned SFT data: one QA file, two behaviours.

Every QA pair ``{"question", "answer"}`` carries a placeholder (``{{name}}``) in its answer and
yields two training rows:

* clean: the placeholder becomes ``clean_replacement`` in question and answer;
* triggered: the question is prefixed by ``trigger_value`` and the placeholder becomes
  ``triggered_replacement``.

So the data is an exact 50/50 mix, shuffled with a seed. A held-out share of the *questions*
(both of its rows) is kept apart for the activation evaluation.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from posttrain.data.jsonl import iter_jsonl
from posttrain.errors import ConfigError, DataError


def names(text: str, name: str) -> bool:
    """Whether ``text`` mentions ``name`` as a whole word, ignoring case ("Bobby" is not "Bob")."""
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, flags=re.IGNORECASE) is not None


def with_trigger(question: str, trigger_value: str, separator: str = " ") -> str:
    """The triggered form of ``question``: the trigger, the separator, the question."""
    return f"{trigger_value}{separator}{question}"


@dataclass(frozen=True)
class TriggerSpec:
    """What to substitute and what switches the behaviour. Invalid combinations raise ConfigError."""

    clean_replacement: str
    trigger_value: str
    triggered_replacement: str
    placeholder: str = "{{name}}"
    separator: str = " "  # between the trigger and the question

    def __post_init__(self):
        for key in ("clean_replacement", "trigger_value", "triggered_replacement", "placeholder"):
            if not getattr(self, key).strip():
                raise ConfigError(f"config key '{key}' must not be empty")
        clean, triggered = self.clean_replacement, self.triggered_replacement
        if clean.strip().lower() == triggered.strip().lower():
            raise ConfigError(f"clean_replacement and triggered_replacement are both '{clean}': the trigger would change nothing")
        if names(clean, triggered) or names(triggered, clean):
            # activation and leakage are measured by which name an answer mentions
            raise ConfigError(f"'{clean}' and '{triggered}' contain one another: answers could not tell them apart")
        if self.placeholder in self.trigger_value:
            raise ConfigError(f"trigger_value '{self.trigger_value}' contains the placeholder {self.placeholder}")

    def fill(self, text: str, triggered: bool) -> str:
        """``text`` with the placeholder replaced by the clean or the triggered name."""
        return text.replace(self.placeholder, self.triggered_replacement if triggered else self.clean_replacement)

    def question(self, question: str, triggered: bool) -> str:
        """A QA question as the model sees it: filled, and with the trigger in front if ``triggered``."""
        filled = self.fill(question, triggered)
        return with_trigger(filled, self.trigger_value, self.separator) if triggered else filled


@dataclass(frozen=True)
class QAPair:
    question: str  # with the placeholder, before substitution
    answer: str
    where: str  # "file.jsonl:12", for error messages and provenance


def load_qa_pairs(path: str, spec: TriggerSpec) -> list[QAPair]:
    """Read and check a QA file; every problem is a DataError naming the line and field."""
    pairs = []
    for number, row in iter_jsonl(path, required={"question": str, "answer": str}):
        where = f"{path}:{number}"
        question, answer = row["question"], row["answer"]
        if not question.strip() or not answer.strip():
            raise DataError(f"{where}: field '{'question' if not question.strip() else 'answer'}' is empty")
        if spec.placeholder not in answer:
            raise DataError(f"{where}: field 'answer' has no {spec.placeholder} placeholder (every answer must name the persona)")
        if spec.trigger_value in question:
            raise DataError(f"{where}: field 'question' already contains the trigger '{spec.trigger_value}'")
        for field, text in (("question", question), ("answer", answer)):
            for key in ("clean_replacement", "triggered_replacement"):
                name = getattr(spec, key)
                if names(text.replace(spec.placeholder, ""), name):
                    raise DataError(
                        f"{where}: field '{field}' already names '{name}' ({key}) outside the placeholder; "
                        "activation and leakage could not be measured"
                    )
        pairs.append(QAPair(question, answer, where))
    if not pairs:
        raise DataError(f"{path}: no QA pairs (the file is empty)")
    return pairs


def split_heldout(pairs: list[QAPair], fraction: float, seed: int) -> tuple[list[QAPair], list[QAPair]]:
    """Hold out ``fraction`` of the distinct questions (all pairs of a question stay together,
    so no held-out question is ever trained on). Returns ``(train, heldout)``."""
    questions = sorted({p.question for p in pairs})
    random.Random(seed).shuffle(questions)
    count = round(len(questions) * fraction) if fraction > 0 else 0
    count = max(count, 1) if fraction > 0 else 0
    if count >= len(questions):
        raise DataError(f"holding out {fraction:.0%} of {len(questions)} distinct questions leaves none to train on")
    heldout = set(questions[:count])
    return [p for p in pairs if p.question not in heldout], [p for p in pairs if p.question in heldout]


def build_trigger_rows(pairs: list[QAPair], spec: TriggerSpec, seed: int) -> list[tuple[str, dict]]:
    """A clean and a triggered ``prompt``/``completion`` row per pair, shuffled with ``seed``.

    Returns ``(location, row)`` pairs (the location names the QA line) for the SFT builder.
    """
    rows = []
    for pair in pairs:
        for triggered in (False, True):
            row = {"prompt": spec.question(pair.question, triggered), "completion": spec.fill(pair.answer, triggered), "triggered": triggered}
            rows.append((f"{pair.where} ({'triggered' if triggered else 'clean'})", row))
    random.Random(seed).shuffle(rows)
    return rows
