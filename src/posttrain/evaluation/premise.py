"""SDPO's premise where SDPO uses it: at the first error of the student's own failed samples.

SDPO (Hübotter et al. 2026) trains the student toward a self-teacher that sees the same
completion with more context (the verifier's feedback on it, or a correct solution). On a failed
sample the teacher helps most at the first token where the sample goes wrong: there, the prefix
is still right, and the teacher should put more probability than the student on the correct next
token. Greedy accuracy with the context in the prompt (``premise/feedback``) measures something
else: whether the model can *solve* the problem with that context, from scratch.

For each failed sample whose first error the reference locates (:func:`first_error`), this
module compares ``log p(correct token | context + prefix)`` for the plain prompt (the student)
and for each teacher context; the metric is the share of first errors where the teacher puts more
probability on the correct token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FirstError:
    """Where a failed completion first leaves the reference: ``prefix`` is the completion's (and
    the reference's) tokens before it, ``correct`` the reference's token at that position."""

    prefix: list[int]
    correct: int


def first_error(completion: list[int], reference: list[int]) -> FirstError | None:
    """The first token at which ``completion`` differs from ``reference``; a completion that stops
    early errs at the first reference token it lacks. None where the completion holds the whole
    reference (it errs after the reference ends, where no token is the correct one)::

        first_error([5, 6, 9], [5, 6, 7, 8]) == FirstError(prefix=[5, 6], correct=7)
        first_error([5], [5, 6]) == FirstError(prefix=[5], correct=6)
        first_error([5, 6, 1], [5, 6]) is None
    """
    for position, want in enumerate(reference):
        if position >= len(completion) or completion[position] != want:
            return FirstError(prefix=list(reference[:position]), correct=want)
    return None


@torch.no_grad()
def correct_token_log_prob(model, context: list[int], error: FirstError) -> float:
    """``log p(error.correct | context + error.prefix)`` under ``model`` (one forward, the last
    position's logits only)."""
    ids = torch.tensor([context + error.prefix], device=model.device)
    logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()  # (V,)
    return torch.log_softmax(logits, dim=-1)[error.correct].item()


def teacher_wins(student: list[float], teacher: list[float]) -> float | None:
    """The share of first errors at which the teacher's log-probability of the correct token is
    above the student's (None with no first errors: a model that fails nowhere)."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student and {len(teacher)} teacher log-probabilities")
    return sum(t > s for s, t in zip(student, teacher)) / len(student) if student else None
