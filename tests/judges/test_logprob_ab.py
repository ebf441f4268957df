"""Unit tests for posttrain.judges.logprob_ab with the tiny causal LM (hand-computed verdicts)."""

from __future__ import annotations

import math

import pytest
import torch

from posttrain.judges.logprob_ab import COMPARE_TEMPLATE, SCORE_TEMPLATE, LogProbABJudge
from posttrain.models import load_model, load_tokenizer, render_prompt

PROMPT = "What is 47 + 38?"
RESPONSES = [
    "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85",
    "Answer: 84",
    "The quick brown fox jumps over the lazy dog.",
    "85",
]
PAIRS = [(RESPONSES[i], RESPONSES[j]) for i in range(len(RESPONSES)) for j in range(len(RESPONSES)) if i != j]


@pytest.fixture(scope="module")
def judge(tiny_model_dir) -> LogProbABJudge:
    return LogProbABJudge(tiny_model_dir)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """An independently loaded copy of the model and tokenizer for the hand computation."""
    model = load_model(tiny_model_dir).eval()
    return model, load_tokenizer(tiny_model_dir)


def _next_token_log_probs(reference, question: str) -> torch.Tensor:
    model, tokenizer = reference
    text = render_prompt(tokenizer, question, False)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)


def _log_p(log_probs: torch.Tensor, ids: list[int]) -> float:
    return math.log(sum(math.exp(log_probs[i].item()) for i in ids))


def _hand_compare(judge, reference, a: str, b: str) -> tuple[float, float, float]:
    ids_a, ids_b = judge._answer_ids("A"), judge._answer_ids("B")
    ab = _next_token_log_probs(reference, COMPARE_TEMPLATE.format(prompt=PROMPT, a=a, b=b))
    ba = _next_token_log_probs(reference, COMPARE_TEMPLATE.format(prompt=PROMPT, a=b, b=a))
    first = _log_p(ab, ids_a) - _log_p(ab, ids_b)  # `a` shown as A
    second = _log_p(ba, ids_b) - _log_p(ba, ids_a)  # `a` shown as B
    prob_a = 1 / (1 + math.exp(-(first + second) / 2))
    return first, second, prob_a


def test_answer_ids_are_the_letters_first_tokens(judge):
    tokenizer = judge.tokenizer
    for word in ("A", "B", "Yes"):
        ids = judge._answer_ids(word)
        assert ids == sorted(set(ids)) and 1 <= len(ids) <= 2
        assert {tokenizer.decode([i]).strip() for i in ids} == {word}
    assert not set(judge._answer_ids("A")) & set(judge._answer_ids("B"))


def test_answer_ids_never_include_a_bare_whitespace_token(judge):
    for word in ("A", "B", "Yes", "No"):
        decoded = [judge.tokenizer.decode([i]) for i in judge._answer_ids(word)]
        assert all(text.strip() for text in decoded), (word, decoded)


@pytest.mark.parametrize("a, b", PAIRS[:6])
def test_compare_is_exactly_symmetric(judge, a, b):
    forward, backward = judge.compare(PROMPT, a, b), judge.compare(PROMPT, b, a)
    assert forward.prob_a == pytest.approx(1 - backward.prob_a, abs=1e-6)
    assert forward.details["logit_a_first"] == pytest.approx(-backward.details["logit_a_second"], abs=1e-6)
    assert forward.details["logit_a_second"] == pytest.approx(-backward.details["logit_a_first"], abs=1e-6)
    assert forward.orders_agree == backward.orders_agree
    flip = {"a": "b", "b": "a", "tie": "tie"}
    assert backward.preferred == flip[forward.preferred]


@pytest.mark.parametrize("a, b", PAIRS[:4])
def test_compare_matches_hand_computation(judge, reference, a, b):
    first, second, prob_a = _hand_compare(judge, reference, a, b)
    verdict = judge.compare(PROMPT, a, b)
    assert verdict.details["logit_a_first"] == pytest.approx(first, abs=1e-5)
    assert verdict.details["logit_a_second"] == pytest.approx(second, abs=1e-5)
    assert verdict.prob_a == pytest.approx(prob_a, abs=1e-6)
    assert 0.0 < verdict.prob_a < 1.0
    assert verdict.preferred == ("a" if prob_a > 0.5 else "b")


def test_verdict_fields_are_consistent(judge):
    agree_seen = set()
    for a, b in PAIRS[::2]:
        verdict = judge.compare(PROMPT, a, b)
        first, second = verdict.details["logit_a_first"], verdict.details["logit_a_second"]
        assert verdict.orders_agree == ((first > 0) == (second > 0))
        assert verdict.confidence == pytest.approx(abs(2 * verdict.prob_a - 1), abs=1e-12)
        assert 0.0 <= verdict.confidence <= 1.0
        assert verdict.prob_a == pytest.approx(1 / (1 + math.exp(-(first + second) / 2)), abs=1e-12)
        assert verdict.preferred == ("tie" if verdict.prob_a == 0.5 else "a" if verdict.prob_a > 0.5 else "b")
        agree_seen.add(verdict.orders_agree)
    assert agree_seen <= {True, False}


def test_compare_accepts_row_fields(judge):
    """Extra row fields (as run_pairs passes them) are accepted and do not change the verdict.
    (Fields named ``a``/``b`` collide with compare's parameters: see test_pairs.py.)"""
    plain = judge.compare(PROMPT, RESPONSES[0], RESPONSES[1])
    with_fields = judge.compare(PROMPT, RESPONSES[0], RESPONSES[1], answer=85, id="x")
    assert with_fields.prob_a == plain.prob_a


@pytest.mark.parametrize("completion", RESPONSES[:3])
def test_score_is_log_p_yes_minus_log_p_no(judge, reference, completion):
    log_probs = _next_token_log_probs(reference, SCORE_TEMPLATE.format(prompt=PROMPT, completion=completion))
    expected = _log_p(log_probs, judge._answer_ids("Yes")) - _log_p(log_probs, judge._answer_ids("No"))
    assert judge.score(PROMPT, completion) == pytest.approx(expected, abs=1e-5)


def test_scores_depend_on_the_completion(judge):
    scores = [judge.score(PROMPT, c) for c in RESPONSES]
    assert len({round(s, 6) for s in scores}) > 1
    assert judge.score_many(PROMPT, RESPONSES) == pytest.approx(scores, abs=1e-6)


def test_base_model_mode_prompts_without_chat_template(tiny_model_dir, reference):
    """In base-model mode the question is rendered as Instruction/Response text."""
    judge = LogProbABJudge(tiny_model_dir, base_model_mode=True)
    model, tokenizer = reference
    text = COMPARE_TEMPLATE.format(prompt=PROMPT, a=RESPONSES[0], b=RESPONSES[1])
    assert render_prompt(judge.tokenizer, text, True) == f"Instruction: {text}\nResponse:"
    ids = tokenizer(f"Instruction: {text}\nResponse:", add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
    first = _log_p(log_probs, judge._answer_ids("A")) - _log_p(log_probs, judge._answer_ids("B"))
    assert judge.compare(PROMPT, RESPONSES[0], RESPONSES[1]).details["logit_a_first"] == pytest.approx(first, abs=1e-5)


def test_only_the_answer_positions_logits_are_computed(judge, monkeypatch):
    shapes = []
    forward = judge.model.forward

    def recording(*args, **kwargs):
        outputs = forward(*args, **kwargs)
        shapes.append(tuple(outputs.logits.shape))
        return outputs

    monkeypatch.setattr(judge.model, "forward", recording)
    judge.score(PROMPT, RESPONSES[0])
    assert shapes == [(1, 1, len(judge.tokenizer))]  # not (1, prompt length, V)
