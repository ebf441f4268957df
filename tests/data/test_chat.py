"""The training rendering of chat templates posttrain cannot trust: markers that leave out the
end-of-turn token, templates that rewrite earlier turns, dataset quirks; and the generation
prompts every command renders. Real templates are covered in tests/conformance/test_templates.py."""

from __future__ import annotations

import copy

import pytest

from posttrain.data.chat import message_text, render_for_training, training_rendering
from posttrain.data.sft import tokenize_example
from posttrain.errors import DataError
from posttrain.models import render_prompt

TWO_TURNS = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
             {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]


def with_template(tokenizer, template: str):
    custom = copy.deepcopy(tokenizer)
    custom.chat_template = template
    return custom


def test_markers_that_leave_out_the_end_of_turn_token_are_refused(tokenizer):
    """The model would never learn to stop: refused once, before any row trains, naming the template."""
    custom = with_template(tokenizer, (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}"))
    with pytest.raises(DataError, match=r"markers of the chat template \(custom, sha1 \w+\) leave out the end-of-turn token"):
        tokenize_example(custom, {"messages": TWO_TURNS}, "f.jsonl:1", False)


def test_a_template_that_rewrites_earlier_turns_is_refused_per_conversation(tokenizer):
    """No markers, and earlier replies render differently once a later turn follows (as Qwen3 drops
    reasoning): the mask cannot be placed, so the row is refused rather than trained shifted."""
    custom = with_template(tokenizer, (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}(earlier){% else %}{{ m['content'] }}{% endif %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"))
    assert training_rendering(custom).route == "incremental"
    with pytest.raises(DataError, match=r"f.jsonl:4: the chat template \(custom, sha1 \w+\) renders assistant turn 1 differently"):
        tokenize_example(custom, {"messages": TWO_TURNS}, "f.jsonl:4", False)
    # a single reply is prefix-preserving, and its mask is the reply through the end-of-turn token
    example = tokenize_example(custom, {"messages": TWO_TURNS[:2]}, "f.jsonl:5", False)
    assert custom.decode([t for t, m in zip(example.input_ids, example.completion_mask) if m]) == "b<|im_end|>\n"


def test_keys_an_arrow_table_fills_with_none_are_dropped(tokenizer):
    """A hub dataset gives every message every key (tool_calls: None); templates test 'is defined'."""
    messages = [{**m, "tool_calls": None, "reasoning_content": None} for m in TWO_TURNS]
    clean = tokenize_example(tokenizer, {"messages": TWO_TURNS}, "x", False)
    assert tokenize_example(tokenizer, {"messages": messages}, "x", False) == clean


def test_tools_column_as_json_text_and_its_errors(tokenizer):
    tools = '[{"type": "function", "function": {"name": "lookup", "parameters": {}}}]'
    with pytest.raises(DataError, match=r"f.jsonl:2: the chat template \(custom, sha1 \w+\) does not render the tool definition 'lookup'"):
        tokenize_example(tokenizer, {"messages": TWO_TURNS, "tools": tools}, "f.jsonl:2", False)
    with pytest.raises(DataError, match="f.jsonl:3: field 'tools' is not valid JSON"):
        tokenize_example(tokenizer, {"messages": TWO_TURNS, "tools": "[{"}, "f.jsonl:3", False)
    renders_tools = with_template(tokenizer, tokenizer.chat_template.replace(
        "{%- for message in messages %}", "{%- if tools %}{{ tools | tojson }}{% endif %}{%- for message in messages %}", 1))
    ids, mask = render_for_training(renders_tools, TWO_TURNS, "x", tools=[{"type": "function", "function": {"name": "lookup"}}])
    assert "lookup" in renders_tools.decode(ids) and "lookup" not in renders_tools.decode([t for t, m in zip(ids, mask) if m])


def test_generation_prompts_keep_system_turns_and_pass_template_arguments(tokenizer):
    custom = with_template(tokenizer, tokenizer.chat_template + "{% if enable_thinking is false %}<think></think>{% endif %}")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    text = render_prompt(custom, messages, False, {"enable_thinking": False})
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.endswith("<|im_start|>assistant\n<think></think>")
    assert render_prompt(custom, messages, False).endswith("<|im_start|>assistant\n")


def test_sft_rows_get_the_jobs_template_arguments_and_a_rows_own_win(tokenizer):
    from posttrain.data.sft import build_sft_examples

    custom = with_template(tokenizer, tokenizer.chat_template.replace(
        "{% generation %}", "{% generation %}{% if style %}[{{ style }}]{% endif %}", 1))
    rows = [("f.jsonl:1", {"messages": TWO_TURNS[:2]}),
            ("f.jsonl:2", {"messages": TWO_TURNS[:2], "chat_template_kwargs": {"style": "own"}})]
    job, own = build_sft_examples(custom, rows, False, 64, chat_template_kwargs={"style": "job"})
    trained = [custom.decode([t for t, m in zip(e["input_ids"], e["completion_mask"]) if m]) for e in (job, own)]
    assert trained == ["[job]b<|im_end|>", "[own]b<|im_end|>"]


def test_message_text():
    assert message_text("plain") == "plain"
    conversation = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "last question"},
    ]
    assert message_text(conversation) == "last question"
    assert message_text([{"role": "assistant", "content": "the completion"}]) == "the completion"
