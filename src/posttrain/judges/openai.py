"""A preference judge that asks a language model behind an OpenAI-compatible API.

Every request asks for a JSON object back:

* ``score`` asks for ``{"score": 1..10, "reason": "..."}``;
* ``compare`` asks for ``{"better": "A" | "B" | "tie", "confidence": 0..1, "reason": "..."}``,
  once with the responses in the order (A, B) and once in the order (B, A), and averages the two
  verdicts so a model's preference for the first (or second) position cancels out.

A reply without these fields (or with them out of range) counts as malformed and is asked again.
HTTP, the API key, retries, the rate limit and the cache are :class:`OpenAIClient`'s
(:mod:`posttrain.judges.openai_client`).
"""

from __future__ import annotations

import json
import math

from posttrain.judges.base import Comparison, Judge
from posttrain.judges.openai_client import Check, OpenAIClient

SYSTEM_PROMPT = (
    "You are an impartial expert judge of AI assistant responses. Judge helpfulness, correctness "
    "and clarity; ignore length and style unless they hurt the answer. Reply with a single JSON "
    "object and nothing else."
)

SCORE_TEMPLATE = """Rate the assistant's response to the user's prompt on a scale from 1 (very poor) to 10 (excellent).

[Prompt]
{prompt}

[Response]
{completion}

Reply with a JSON object: {{"score": <number from 1 to 10>, "reason": "<one or two sentences>"}}"""

COMPARE_TEMPLATE = """Two assistant responses to the same user prompt follow. Which one is better?

[Prompt]
{prompt}

[Response A]
{a}

[Response B]
{b}

Reply with a JSON object: {{"better": "A" or "B" or "tie", "confidence": <number from 0 to 1>, "reason": "<one or two sentences>"}}"""


class OpenAIJudge(Judge, OpenAIClient):
    """A :class:`Judge` whose verdicts come from a model behind an OpenAI-compatible endpoint.

    It is an :class:`OpenAIClient` (same arguments) rather than holding one, so that its
    request counters, cache and settings are read where the judge is: ``posttrain pairs`` reports
    ``requests_sent`` and ``cache_hits``.
    """

    name = "openai"
    pairwise = True

    def score(self, prompt: str, completion: str, /, **row) -> float:
        """The model's 1–10 rating of ``completion`` as an answer to ``prompt``."""
        return self._ask(SCORE_TEMPLATE.format(prompt=prompt, completion=completion), _check_score)["score"]

    def compare(self, prompt: str, a: str, b: str, /, **row) -> Comparison:
        """Which of ``a`` and ``b`` is better, asked in both orders to cancel position bias."""
        ab = self._ask(COMPARE_TEMPLATE.format(prompt=prompt, a=a, b=b), _check_compare)
        ba = self._ask(COMPARE_TEMPLATE.format(prompt=prompt, a=b, b=a), _check_compare)
        prob_a_ab = _prob_first(ab)
        prob_a_ba = 1.0 - _prob_first(ba)  # in the second order, original a was shown as B
        prob_a = (prob_a_ab + prob_a_ba) / 2
        preferred = _pick(prob_a)
        return Comparison(
            preferred=preferred,
            prob_a=prob_a,
            confidence=abs(2 * prob_a - 1),
            orders_agree=_pick(prob_a_ab) == _pick(prob_a_ba),
            details={
                "reason_ab": ab["reason"],
                "reason_ba": ba["reason"],
                "reply_ab": ab,  # as the model answered, with a shown as A
                "reply_ba": ba,  # as the model answered, with b shown as A
                "prob_a_ab": prob_a_ab,
                "prob_a_ba": prob_a_ba,
            },
        )

    def _ask(self, content: str, check: Check) -> dict:
        """One judging question, under the judge's system prompt, answered in JSON."""
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
        return self.ask_json(messages, check)


def _number(reply: dict, key: str) -> float:
    if key not in reply:
        raise ValueError(f'reply has no "{key}" field')
    value = reply[key]
    if isinstance(value, str):  # tolerate "7" and "0.8": a number written as a string
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f'"{key}" is not a number: {value!r}') from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'"{key}" is not a number: {value!r}')
    return float(value)


def _reason(reply: dict) -> str:
    reason = reply.get("reason", "")
    return reason if isinstance(reason, str) else json.dumps(reason)


def _check_score(reply: dict) -> dict:
    score = _number(reply, "score")
    if not 1.0 <= score <= 10.0:
        raise ValueError(f'"score" {score:g} is outside 1..10')
    return {"score": score, "reason": _reason(reply)}


def _check_compare(reply: dict) -> dict:
    if "better" not in reply:
        raise ValueError('reply has no "better" field')
    better = reply["better"]
    if not isinstance(better, str):
        raise ValueError(f'"better" is not a string: {better!r}')
    better = {"a": "A", "b": "B", "tie": "tie"}.get(better.strip().lower())
    if better is None:
        raise ValueError(f'"better" must be "A", "B" or "tie", got {reply["better"]!r}')
    if better == "tie" and "confidence" not in reply:
        confidence = 0.0  # a tie needs no confidence
    else:
        confidence = _number(reply, "confidence")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f'"confidence" {confidence:g} is outside 0..1')
    return {"better": better, "confidence": confidence, "reason": _reason(reply)}


def _prob_first(reply: dict) -> float:
    """The probability that the response shown as A is the better one, from one verdict."""
    half = reply["confidence"] / 2
    return {"A": 0.5 + half, "B": 0.5 - half, "tie": 0.5}[reply["better"]]


def _pick(prob_a: float) -> str:
    return "a" if prob_a > 0.5 else ("b" if prob_a < 0.5 else "tie")
