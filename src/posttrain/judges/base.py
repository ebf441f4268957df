"""One interface for every judge: ``score`` one completion, ``compare`` two.

A judge may be exact (the task's verifier), learned (a reward model), or another language model
(log-prob A/B, an OpenAI-compatible API). Pair construction and evaluation only see this
interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class Comparison:
    """The verdict on two responses A and B to one prompt.

    Attributes:
        preferred: "a", "b" or "tie".
        prob_a: the judge's probability that A is the better response, in [0, 1].
        confidence: ``|2·prob_a − 1|``: 0 for a coin flip, 1 for certainty.
        orders_agree: for judges that ask in both orders (A/B then B/A) to cancel position bias,
            whether both orders picked the same response; None for judges without an order.
        details: judge-specific extras (raw scores, log-probs, the API's reason).
    """

    preferred: Literal["a", "b", "tie"]
    prob_a: float
    confidence: float
    orders_agree: bool | None = None
    details: dict = field(default_factory=dict)

    @classmethod
    def from_scores(cls, score_a: float, score_b: float, **details) -> "Comparison":
        """A comparison from two scalar scores (verifier, reward model)."""
        preferred = "tie" if score_a == score_b else ("a" if score_a > score_b else "b")
        prob_a = {"a": 1.0, "b": 0.0, "tie": 0.5}[preferred]
        return cls(preferred, prob_a, abs(2 * prob_a - 1), None, {"score_a": score_a, "score_b": score_b, **details})


class Judge:
    """Base class: subclasses implement ``score`` (and may override ``compare``).

    ``pairwise`` tells callers how to rank several completions. A language model judging "A or
    B?" in both orders gives a better signal than its single-response score, so a pairwise
    judge is asked to ``compare`` them two by two; any other judge to ``score_many`` them.
    """

    name = "judge"
    pairwise = False

    # prompt/completion/a/b are positional-only so that row fields with the same names
    # (the arithmetic task has `a` and `b`) pass through **row without colliding.
    def score(self, prompt: str, completion: str, /, **row) -> float:
        """A scalar quality score of ``completion`` (higher is better)."""
        raise NotImplementedError

    def score_many(self, prompt: str, completions: list[str], /, **row) -> list[float]:
        """Scores of several completions of one prompt (judges that batch override this)."""
        return [self.score(prompt, completion, **row) for completion in completions]

    def compare(self, prompt: str, a: str, b: str, /, **row) -> Comparison:
        """Which of two completions is better; by default, by their scores."""
        score_a, score_b = self.score_many(prompt, [a, b], **row)
        return Comparison.from_scores(score_a, score_b)
