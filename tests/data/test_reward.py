"""What a reward model reads (posttrain.data.reward): the text the judge scores is the text rm trains on."""

import pytest
from transformers import AutoTokenizer

from posttrain.data.preference import normalize_pairs
from posttrain.data.reward import reward_model_text, tokenize_reward_pairs
from posttrain.errors import DataError


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_string_pairs_and_their_normalised_messages_read_the_same(tokenizer):
    """`posttrain pairs` writes strings; normalize_pairs turns them into one user and one assistant
    turn; the judge is called with the strings. All three render to one text."""
    text = reward_model_text(tokenizer, "What is 1 + 1?", "2")
    assert text == "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
    pair = normalize_pairs([("x:1", {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"})])[0]
    assert reward_model_text(tokenizer, pair["prompt"], pair["chosen"]) == text


def test_without_a_template_prompt_and_response_are_joined_by_a_newline(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    assert reward_model_text(tokenizer, "q", "a") == "q\na"
    assert reward_model_text(tokenizer, [{"role": "user", "content": "q"}], [{"role": "assistant", "content": "a"}]) == "q\na"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "q"}]
    with pytest.raises(DataError, match="prompt of 3 messages needs a chat template.*hh_format: text"):
        reward_model_text(tokenizer, turns, "a")


def test_overlong_pairs_are_dropped_and_all_overlong_is_an_error(tokenizer):
    pairs = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a " * 200, "rejected": "b"}]
    rows = tokenize_reward_pairs(tokenizer, pairs, max_length=64)
    assert len(rows) == 1
    assert rows[0]["chosen_ids"] == tokenizer(reward_model_text(tokenizer, "q", "a"), add_special_tokens=False)["input_ids"]
    with pytest.raises(DataError, match="every one of the 2 pairs is longer than max_length"):
        tokenize_reward_pairs(tokenizer, pairs, max_length=4)
