"""Unit tests for posttrain.judges.reward_model with a tiny, locally built Qwen2 reward model."""

from __future__ import annotations

import pytest
import torch

from posttrain.errors import ConfigError, PosttrainError
from posttrain.judges.base import Comparison
from posttrain.judges.factory import build_judge
from posttrain.judges.reward_model import RewardModelJudge

PROMPT = "What is 47 + 38?"
COMPLETIONS = [
    "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85",
    "Answer: 84",
    "I think the answer is eighty-five, but let me check the columns once more to be sure.",
    "85",
    "The quick brown fox jumps over the lazy dog.",
]


def _make_reward_model(out, tiny_model_dir: str, num_labels: int, seed: int = 0, chat_template: bool = True) -> str:
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_labels = num_labels
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():  # a larger head than the default init, so scores are well apart
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(out)
    if not chat_template:
        tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory) -> str:
    return _make_reward_model(tmp_path_factory.mktemp("rm1"), tiny_model_dir, num_labels=1)


@pytest.fixture(scope="module")
def judge(rm_dir) -> RewardModelJudge:
    return RewardModelJudge(rm_dir)


def _hand_logits(model, tokenizer, text: str) -> torch.Tensor:
    """The head applied to the last token's hidden state of the unpadded text (the backbone and
    the head called directly, without the model's own pooling)."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[0, -1]
        return model.score(hidden).float()


def _chat_text(tokenizer, prompt, completion) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
    )
    assert text == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{completion}<|im_end|>\n"
    return text


def test_score_is_the_head_logit_on_the_chat_text(judge):
    tokenizer, model = judge.tokenizer, judge.model
    for completion in COMPLETIONS[:3]:
        expected = _hand_logits(model, tokenizer, _chat_text(tokenizer, PROMPT, completion))
        assert expected.shape == (1,)
        assert judge.score(PROMPT, completion) == pytest.approx(expected.item(), abs=1e-5)


def test_scores_differ_between_completions(judge):
    """A sanity check that the comparisons below are not between equal numbers."""
    scores = judge.score_many(PROMPT, COMPLETIONS)
    assert len(set(round(s, 4) for s in scores)) == len(COMPLETIONS)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_scores_equal_one_by_one(rm_dir, padding_side):
    """Padding (on either side) must not change a completion's score."""
    judge = RewardModelJudge(rm_dir, batch_size=2)
    judge.tokenizer.padding_side = padding_side
    batched = judge.score_many(PROMPT, COMPLETIONS)
    single = [judge.score(PROMPT, c) for c in COMPLETIONS]
    assert len(batched) == len(COMPLETIONS)
    for got, want in zip(batched, single):
        assert got == pytest.approx(want, abs=1e-5)


def test_batch_size_does_not_change_scores(rm_dir):
    one = RewardModelJudge(rm_dir, batch_size=1).score_many(PROMPT, COMPLETIONS)
    all_at_once = RewardModelJudge(rm_dir, batch_size=16).score_many(PROMPT, COMPLETIONS)
    assert all_at_once == pytest.approx(one, abs=1e-5)


def test_compare_prefers_the_higher_score(judge):
    scores = judge.score_many(PROMPT, COMPLETIONS[:2])
    hi, lo = (COMPLETIONS[0], COMPLETIONS[1]) if scores[0] > scores[1] else (COMPLETIONS[1], COMPLETIONS[0])
    verdict = judge.compare(PROMPT, hi, lo)
    assert isinstance(verdict, Comparison)
    assert verdict.preferred == "a" and verdict.prob_a == 1.0 and verdict.confidence == 1.0
    assert verdict.orders_agree is None
    assert verdict.details["score_a"] == pytest.approx(max(scores), abs=1e-5)
    assert verdict.details["score_b"] == pytest.approx(min(scores), abs=1e-5)
    flipped = judge.compare(PROMPT, lo, hi)
    assert flipped.preferred == "b" and flipped.prob_a == 0.0


def test_two_label_head_scores_the_logit_difference(tiny_model_dir, tmp_path):
    path = _make_reward_model(tmp_path / "rm2", tiny_model_dir, num_labels=2, seed=1)
    judge = RewardModelJudge(path)
    tokenizer, model = judge.tokenizer, judge.model
    scores = judge.score_many(PROMPT, COMPLETIONS[:3])
    for completion, got in zip(COMPLETIONS[:3], scores):
        logits = _hand_logits(model, tokenizer, _chat_text(tokenizer, PROMPT, completion))
        assert logits.shape == (2,)
        assert got == pytest.approx((logits[1] - logits[0]).item(), abs=1e-5)
        assert got != pytest.approx(logits[1].item(), abs=1e-3)  # not just the "good" logit


def test_without_chat_template_prompt_and_completion_are_joined_by_a_newline(tiny_model_dir, tmp_path):
    path = _make_reward_model(tmp_path / "rm-plain", tiny_model_dir, num_labels=1, chat_template=False)
    judge = RewardModelJudge(path)
    assert not judge.tokenizer.chat_template
    tokenizer, model = judge.tokenizer, judge.model
    expected = _hand_logits(model, tokenizer, f"{PROMPT}\n{COMPLETIONS[0]}")
    assert judge.score(PROMPT, COMPLETIONS[0]) == pytest.approx(expected.item(), abs=1e-5)


def test_three_label_head_is_rejected(tiny_model_dir, tmp_path):
    path = _make_reward_model(tmp_path / "rm3", tiny_model_dir, num_labels=3)
    with pytest.raises(PosttrainError, match="1 or 2 labels"):
        RewardModelJudge(path)


def test_missing_directory_is_a_posttrain_error(tmp_path):
    with pytest.raises(PosttrainError, match="does not exist"):
        RewardModelJudge(str(tmp_path / "no-such-model"))


def test_directory_without_a_model_is_a_posttrain_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PosttrainError):
        RewardModelJudge(str(tmp_path / "empty"))


def test_build_judge_reward_model(rm_dir):
    judge = build_judge("reward_model", model=rm_dir)
    assert isinstance(judge, RewardModelJudge) and judge.name == "reward_model"


@pytest.mark.parametrize("name", ["reward_model", "logprob_ab"])
@pytest.mark.parametrize("model", [None, ""])
def test_build_judge_without_model_is_a_config_error(name, model):
    with pytest.raises(ConfigError, match="judge_model"):
        build_judge(name, model=model)


def test_build_judge_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown judge"):
        build_judge("gpt4", model="x")
