"""Every chat template TRL ships (the originals models come with, ``trl/chat_templates/*.jinja``)
× the conversation shapes users train on: what ``posttrain sft`` trains, checked independently
of posttrain's masking code.

The expectation comes from the messages and the template family's end-of-turn token, never from
posttrain: on the tokens posttrain returns, every assistant reply (its reasoning, tool calls and
content) and the end-of-turn token after it carry loss, and nothing from where the previous reply
ended to the end of a system, user or tool message does. Whether a template can render a shape
at all is asked of transformers directly (does the plain rendering fail, or leave out a message);
where it cannot, posttrain must refuse the row in one line that names the template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trl
from jinja2 import TemplateError
from transformers import AutoTokenizer

from posttrain.data.chat import training_rendering
from posttrain.data.sft import tokenize_example
from posttrain.errors import DataError

TEMPLATES_DIR = Path(trl.__file__).parent / "chat_templates"
TEMPLATES = sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja") if not p.stem.endswith("_training"))

# The token(s) each family ends an assistant turn with, read off the model cards' formats.
END_OF_TURN = {
    "cohere2": ["<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"],
    "cohere": ["<|END_OF_TURN_TOKEN|>"],
    "deepseek": ["<｜end▁of▁sentence｜>"],
    "diffusion_gemma": ["<turn|>", "<tool_call|>"],  # a tool call ends with the call's end marker,
    "gemma4": ["<turn|>", "<tool_call|>", "<|tool_response>"],  # then stops where the tool's response opens
    "gemma": ["<end_of_turn>"],
    "glm4moe": ["<|user|>", "<|observation|>"],  # GLM stops by starting the next turn
    "gptoss": ["<|end|>", "<|return|>", "<|call|>"],  # <|return|> ends the last reply, <|call|> a tool call
    "idefics3": ["<end_of_utterance>"],
    "smolvlm": ["<end_of_utterance>"],
    "lfm2": ["<|im_end|>"],
    "llama3": ["<|eot_id|>"],
    "llava_next": ["</s>"],
    "muse_glimmer": ["<|eot|>"],
    "nemotron": ["<|im_end|>"],
    "phi3": ["<|end|>"],
    "qwen": ["<|im_end|>"],
}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SHAPES = {
    "single turn": {"messages": [
        {"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "It is 5."}]},
    "system + two turns": {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "It is 5."},
        {"role": "user", "content": "And 4+4?"}, {"role": "assistant", "content": "It is 8."}]},
    "reasoning": {"messages": [
        {"role": "user", "content": "What is 6*7?"},
        {"role": "assistant", "reasoning_content": "Six sevens make forty-two.", "content": "It is 42."}]},
    "tool calling": {"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "Weather in the French capital?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "name": "get_weather", "content": "Sunny and 21 degrees"},
        {"role": "assistant", "content": "It is sunny there."}]},
    "prompt/completion (conversational)": {
        "prompt": [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "It is 5."},
                   {"role": "user", "content": "And 4+4?"}],
        "completion": [{"role": "assistant", "content": "It is 8."}]},
}


def end_of_turn(template: str) -> list[str]:
    return next(ends for family, ends in END_OF_TURN.items() if template.startswith(family))


def tokenizer_with(tiny_model_dir: str, template_text: str):
    """The tiny tokenizer given the template and, as added tokens, the special tokens it uses, as a
    real model's tokenizer has them (so each end-of-turn marker is one token)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    specials = set(re.findall(r"<\|[^|<>\s]+\|>|<｜[^｜]+｜>|<\w+\|>|<\|\w+>|<(?:start|end)_of_\w+>|</s>", template_text))
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(specials)})
    tokenizer.bos_token = "<|bos|>"
    tokenizer.chat_template = template_text
    return tokenizer


def conversation(row: dict) -> list[dict]:
    return row["messages"] if "messages" in row else row["prompt"] + row["completion"]


def renders_every_message(tokenizer, row: dict) -> bool:
    """transformers' own rendering of the row with the original template shows every message's
    content, reasoning, tool call and tool definition; False where it fails or drops one. A
    template that wants tool-call arguments as JSON text (DeepSeek-V3) is asked again with them so."""
    messages = conversation(row)
    try:
        try:
            text = tokenizer.apply_chat_template(messages, tools=row.get("tools"), tokenize=False)
        except TypeError:
            messages = [{**m, "tool_calls": [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                                             for c in m["tool_calls"]]} if "tool_calls" in m else m for m in messages]
            text = tokenizer.apply_chat_template(messages, tools=row.get("tools"), tokenize=False)
    except (TemplateError, TypeError):
        return False
    pieces = [m[k] for m in conversation(row) for k in ("content", "reasoning_content") if m.get(k)]
    pieces += [piece for m in conversation(row) for c in m.get("tool_calls", [])
               for piece in (c["function"]["name"], *c["function"]["arguments"].values())]
    pieces += [t["function"]["name"] for t in row.get("tools", [])]
    return all(piece in text for piece in pieces)


def check_trained_tokens(tokenizer, ids: list[int], mask: list[int], messages: list[dict], trained_from: int,
                         ends: list[str]) -> None:
    """The loss falls on exactly the assistant replies from message ``trained_from`` on, each through
    its end-of-turn token (and the whitespace after it); the other messages, and the ground between
    them, carry none."""
    pieces = [tokenizer.decode([token]) for token in ids]
    text, masked = "".join(pieces), []
    for piece, bit in zip(pieces, mask):
        masked += [bit] * len(piece)
    position, boundary = 0, 0
    for index, message in enumerate(messages):
        first = [message[k] for k in ("reasoning_content", "content") if message.get(k)]
        first += [c["function"]["name"] for c in message.get("tool_calls", [])]
        starts = [text.index(p, position) for p in first if p in text[position:]]
        assert starts, f"message {index} is not in the rendered text"
        start = min(starts)
        end = max(text.index(p, position) + len(p) for p in first)
        if message["role"] != "assistant":
            assert not any(masked[boundary:end]), f"loss on {message['role']} message {index}: {text[boundary:end]!r}"
        elif index < trained_from:
            assert not any(masked[start:end]), f"loss on prompt reply {index}: {text[start:end]!r}"
        else:
            found = [(text.index(e, end), e) for e in ends if e in text[end:]]
            assert found, f"reply {index} is not followed by its end-of-turn token: {text[end:end + 30]!r}"
            stop_at, stop = min(found)
            assert all(masked[start:stop_at + len(stop)]), (
                f"reply {index} not all trained through its end-of-turn token: {text[start:stop_at + len(stop)]!r}")
            end = stop_at + len(stop)
            while True:  # the turn's own closing: a second end marker (a call's, then the turn's), a newline
                rest = text[end:].lstrip()
                more = next((e for e in ends if rest.startswith(e) and all(masked[len(text) - len(rest):][:len(e)])), None)
                end = len(text) - len(rest) + (len(more) if more else 0)
                if more is None:
                    break
            boundary = end
        position = end


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("template", TEMPLATES)
def test_sft_trains_exactly_the_replies_or_refuses(template, shape, tiny_model_dir, cell):
    """sft on a conversation rendered with a real template: loss on the replies and their end-of-turn tokens only."""
    outcome = cell("templates", template, shape)
    template_text = (TEMPLATES_DIR / f"{template}.jinja").read_text(encoding="utf-8")
    tokenizer = tokenizer_with(tiny_model_dir, template_text)
    row = SHAPES[shape]
    if not renders_every_message(tokenizer, row):
        with pytest.raises(DataError) as refused:
            tokenize_example(tokenizer, row, "data.jsonl:1", base_model_mode=False)
        message = str(refused.value)
        assert "\n" not in message and template in message, message
        outcome(f"refused: {message}")
        return
    example = tokenize_example(tokenizer, row, "data.jsonl:1", base_model_mode=False)
    trained_from = len(row["prompt"]) if "prompt" in row else 0
    check_trained_tokens(tokenizer, example.input_ids, example.completion_mask, conversation(row), trained_from,
                         end_of_turn(template))
    outcome(f"trained ({training_rendering(tokenizer).route})")


@pytest.fixture(scope="module")
def qwen3_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model with Qwen3's chat template (its special tokens are the tiny tokenizer's own)."""
    import shutil

    out = tmp_path_factory.mktemp("qwen3-template") / "model"
    shutil.copytree(tiny_model_dir, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = (TEMPLATES_DIR / "qwen3.jinja").read_text(encoding="utf-8")
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["dpo", "kto"])
def test_preference_rows_split_prompt_and_response_on_a_real_template(command, qwen3_model_dir, tmp_path):
    """dpo and kto on Qwen3 with a system turn, an earlier exchange and enable_thinking: false: the
    prompt keeps every earlier turn and ends with the generation prompt the template makes, and the
    response is the reply and its end-of-turn token, nothing of the prompt twice."""
    import json as json_module

    from posttrain.commands.dpo import DPOJobConfig, build_dpo_trainer
    from posttrain.commands.kto import KTOJobConfig, build_kto_trainer
    from posttrain.config import load_config

    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"},
              {"role": "assistant", "content": "It is 5."}, {"role": "user", "content": "And 4+4?"}]
    rows = [{"prompt": prompt, "chosen": [{"role": "assistant", "content": f"It is {8 + i}."}],
             "rejected": [{"role": "assistant", "content": "No idea."}]} for i in range(4)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json_module.dumps(row) + "\n" for row in rows))
    values = dict(model_name_or_path=qwen3_model_dir, dataset_name=str(data), output_dir=str(tmp_path / "out"),
                  max_steps=1, per_device_train_batch_size=2, chat_template_kwargs={"enable_thinking": False})
    if command == "dpo":
        trainer = build_dpo_trainer(load_config(DPOJobConfig, values=values))
    else:
        trainer = build_kto_trainer(load_config(KTOJobConfig, values=values))
    tokenizer = trainer.processing_class
    example = trainer.train_dataset[0]
    prompt_text = tokenizer.decode(example["prompt_ids"])
    response_key = "chosen_ids" if command == "dpo" else "completion_ids"
    response = tokenizer.decode(example[response_key])
    expected_prompt = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
                       "<|im_start|>assistant\nIt is 5.<|im_end|>\n<|im_start|>user\nAnd 4+4?<|im_end|>\n"
                       "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert prompt_text == expected_prompt
    assert re.fullmatch(r"(It is \d+\.|No idea\.)<\|im_end\|>\n", response), response
