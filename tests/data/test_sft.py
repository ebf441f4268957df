"""Response-only masks for every SFT format, checked on the decoded tokens."""

import pytest

from posttrain.data.base_format import base_format
from posttrain.data.sft import build_sft_examples, tokenize_example
from posttrain.errors import DataError
from posttrain.models import load_tokenizer


def split(tokenizer, example):
    """(text with loss, text without loss)."""
    loss = [i for i, m in zip(example.input_ids, example.completion_mask) if m]
    rest = [i for i, m in zip(example.input_ids, example.completion_mask) if not m]
    return tokenizer.decode(loss), tokenizer.decode(rest)


def test_prompt_completion_strings(tokenizer):
    example = tokenize_example(tokenizer, {"prompt": "What is 1 + 2?", "completion": "Answer: 3"}, "x", False)
    loss, rest = split(tokenizer, example)
    # the template's generation markers close on the end-of-turn token: its newline carries no loss
    assert loss == "Answer: 3<|im_end|>"
    assert rest == "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n\n"


def test_messages_loss_on_every_assistant_turn_only(tokenizer):
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "and?"},
            {"role": "assistant", "content": "bye"},
        ]
    }
    loss, rest = split(tokenizer, tokenize_example(tokenizer, row, "x", False))
    assert loss == "hello<|im_end|>bye<|im_end|>"
    assert "Be brief." in rest and "and?" in rest and "hello" not in rest


def test_conversational_prompt_completion_ignores_assistant_turns_in_prompt(tokenizer):
    row = {
        "prompt": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "earlier"},
            {"role": "user", "content": "b"},
        ],
        "completion": [{"role": "assistant", "content": "later"}],
    }
    loss, _ = split(tokenizer, tokenize_example(tokenizer, row, "x", False))
    assert loss == "later<|im_end|>"


def test_base_format_masks_through_response_marker(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, base_model_mode=True)
    example = tokenize_example(tokenizer, {"prompt": "Add 1 and 2.", "completion": "3"}, "x", True)
    loss, rest = split(tokenizer, example)
    assert rest == "Instruction: Add 1 and 2.\nResponse:"
    assert loss == " 3\nEND"
    # contamination guard: no chat markup, no special token anywhere
    assert not set(example.input_ids) & set(tokenizer.all_special_ids)


def test_base_text_rows(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, base_model_mode=True)
    text = base_format("Name a colour.", "Blue.")
    assert text == "Instruction: Name a colour.\nResponse: Blue.\nEND"
    loss, _ = split(tokenizer, tokenize_example(tokenizer, {"text": text}, "x", True))
    assert loss == " Blue.\nEND"
    with pytest.raises(DataError, match=r"f\.jsonl:3: field 'text' has no 'Response:'"):
        tokenize_example(tokenizer, {"text": "Instruction: x"}, "f.jsonl:3", True)


def test_text_rows_outside_base_mode_are_plain_documents_with_loss_everywhere(tokenizer):
    """Language modelling (continued pretraining): no template, every token trained, EOS appended."""
    example = tokenize_example(tokenizer, {"text": "What is 1 + 2? Answer: 3"}, "x", False)
    loss, rest = split(tokenizer, example)
    assert rest == "" and all(example.completion_mask)
    assert loss == "What is 1 + 2? Answer: 3" + tokenizer.eos_token
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert "<|im_start|>" not in loss


def test_plain_prompt_completion_is_one_text_with_loss_on_the_completion(tokenizer):
    """TRL's non-conversational prompt-completion: no template, loss from the completion on, EOS appended."""
    row = {"prompt": "Q: What is 1 + 2?\nA:", "completion": " 1+2=3 carry 0. Answer: 3"}
    example = tokenize_example(tokenizer, row, "x", False, plain=True)
    loss, rest = split(tokenizer, example)
    assert rest == "Q: What is 1 + 2?\nA:"
    assert loss == " 1+2=3 carry 0. Answer: 3" + tokenizer.eos_token
    # the same row without plain is a chat exchange
    chat_loss, chat_rest = split(tokenizer, tokenize_example(tokenizer, row, "x", False))
    assert chat_rest.startswith("<|im_start|>user\n") and chat_loss.endswith("<|im_end|>")
    with pytest.raises(DataError, match="f.jsonl:2: field 'prompt' must be a string with prompt_completion_format: plain"):
        tokenize_example(tokenizer, {"prompt": [{"role": "user", "content": "x"}], "completion": "y"}, "f.jsonl:2", False, plain=True)


@pytest.mark.parametrize(
    "row, base, message",
    [
        ({"prompt": "x"}, False, "missing field 'completion'"),
        ({"completion": "x"}, True, "missing field 'prompt'"),
        ({"prompt": ["x"], "completion": "y"}, False, r"field 'prompt'\[0\] must be an object"),
        ({"messages": []}, False, "non-empty list"),
        ({"messages": [{"role": "user", "content": "x"}]}, False, "no assistant message"),
        ({"prompt": 3, "completion": "y"}, True, "field 'prompt' must be a string"),
        ({"text": ""}, False, "field 'text' must be a non-empty string"),
        ({"text": 7}, False, "field 'text' must be a non-empty string"),
        ({"answer": 3}, False, "missing field 'prompt'.*or 'text'"),
    ],
)
def test_bad_rows_name_location_and_field(tiny_model_dir, row, base, message):
    tokenizer = load_tokenizer(tiny_model_dir, base_model_mode=base)
    with pytest.raises(DataError, match="data.jsonl:7: .*" + message):
        tokenize_example(tokenizer, row, "data.jsonl:7", base)


def test_overlong_rows_truncate_with_warning_or_error(tokenizer, caplog):
    long_prompt = "word " * 100
    rows = [("d.jsonl:1", {"prompt": "short", "completion": "ok"}), ("d.jsonl:2", {"prompt": "hi", "completion": long_prompt})]
    examples = build_sft_examples(tokenizer, rows, False, max_length=32, overlong="truncate")
    assert len(examples) == 2 and len(examples[1]["input_ids"]) == 32
    assert "truncated" in caplog.text
    with pytest.raises(DataError, match="d.jsonl:2: .* longer than max_length=32"):
        build_sft_examples(tokenizer, rows, False, max_length=32, overlong="error")


def test_rows_left_without_response_are_dropped(tokenizer):
    rows = [("d:1", {"prompt": "word " * 100, "completion": "ok"}), ("d:2", {"prompt": "a", "completion": "b"})]
    examples = build_sft_examples(tokenizer, rows, False, max_length=32)
    assert len(examples) == 1
    with pytest.raises(DataError, match="no usable SFT examples"):
        build_sft_examples(tokenizer, rows[:1], False, max_length=32)
