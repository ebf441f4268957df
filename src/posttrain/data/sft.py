"""Turning SFT rows into token ids with a loss mask on the response only.

Formats (one row each):
  * chat: ``{"messages": [...]}`` (loss on every assistant turn) or ``{"prompt", "completion"}``
    as strings or message lists (loss on the completion);
  * language modelling: ``{"text"}`` (without ``base_model_mode``), a plain document with loss
    on every token and the EOS token appended: continued pretraining, no template;
  * plain (``prompt_completion_format="plain"``): string ``{"prompt", "completion"}`` joined as
    one text with no template, loss on the completion, EOS appended (TRL's standard
    non-conversational prompt-completion format);
  * base (``base_model_mode``): ``{"prompt", "completion"}`` rendered as
    ``Instruction: X\\nResponse: Y\\nEND``, or ``{"text"}`` already in that form; everything up to
    and including ``Response:`` is masked, and no special token is added.

Masks are computed on characters and mapped to tokens with the tokenizer's offsets, so they are
exact whatever the tokenizer merges across the prompt/response boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from posttrain.data.base_format import RESPONSE_MARKER, base_format
from posttrain.errors import DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)

@dataclass
class TokenizedExample:
    input_ids: list[int]
    completion_mask: list[int]  # 1 where the token is part of the response (gets loss)


def check_messages(messages: object, where: str, field: str) -> list[dict]:
    """``messages`` if it is a non-empty list of {role, content} strings, else a DataError at ``where``."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field '{field}'[{i}] must be an object with string 'role' and 'content'")
    return messages


def _chat_spans(tokenizer: PreTrainedTokenizerBase, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages``; return the text and the character spans of the assistant turns."""
    if tokenizer.chat_template is None:
        raise DataError(f"{where}: chat data needs a tokenizer with a chat template (or set base_model_mode)")
    spans, text = [], ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not through.startswith(before):
            raise DataError(f"{where}: the chat template does not render turn {i} as a continuation of the earlier turns")
        spans.append((len(before), len(through)))
        text = through
    if not spans:
        raise DataError(f"{where}: no assistant message to train on")
    last_user = messages[-1]["role"] != "assistant"
    if last_user:  # trailing non-assistant turns carry no loss but belong to the text
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    return text, spans


def _row_text(
    tokenizer: PreTrainedTokenizerBase, row: dict, where: str, base_model_mode: bool, plain: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    if base_model_mode:
        if "text" in row:
            text = row["text"]
            if not isinstance(text, str):
                raise DataError(f"{where}: field 'text' must be a string")
            start = text.find(RESPONSE_MARKER)
            if start < 0:
                raise DataError(f"{where}: field 'text' has no '{RESPONSE_MARKER}' (expected Instruction: X\\nResponse: Y\\nEND)")
            return text, [(start + len(RESPONSE_MARKER), len(text))]
        for field in ("prompt", "completion"):
            if field not in row:
                raise DataError(f"{where}: missing field '{field}' (base_model_mode expects prompt/completion or text)")
            if not isinstance(row[field], str):
                raise DataError(f"{where}: field '{field}' must be a string in base_model_mode")
        text = base_format(row["prompt"], row["completion"])
        return text, [(text.index(RESPONSE_MARKER) + len(RESPONSE_MARKER), len(text))]
    if "text" in row and not ("messages" in row or "prompt" in row):
        if not isinstance(row["text"], str) or not row["text"]:
            raise DataError(f"{where}: field 'text' must be a non-empty string")
        text = row["text"] + (tokenizer.eos_token or "")  # documents end, so the model learns to stop
        return text, [(0, len(text))]
    if "messages" in row:
        return _chat_spans(tokenizer, check_messages(row["messages"], where, "messages"), where)
    for field in ("prompt", "completion"):
        if field not in row:
            raise DataError(f"{where}: missing field '{field}' (SFT rows need 'messages', 'prompt' and 'completion', or 'text')")
    prompt, completion = row["prompt"], row["completion"]
    if plain:
        for field in ("prompt", "completion"):
            if not isinstance(row[field], str):
                raise DataError(f"{where}: field '{field}' must be a string with prompt_completion_format: plain")
        text = prompt + completion + (tokenizer.eos_token or "")
        return text, [(len(prompt), len(text))]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else check_messages(prompt, where, "prompt")
    completion = (
        [{"role": "assistant", "content": completion}]
        if isinstance(completion, str)
        else check_messages(completion, where, "completion")
    )
    text, spans = _chat_spans(tokenizer, prompt + completion, where)
    # only the completion's turns get loss, not assistant turns inside the prompt
    prompt_end = len(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))
    return text, [(max(s, prompt_end), e) for s, e in spans if e > prompt_end]


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, row: dict, where: str, base_model_mode: bool, plain: bool = False
) -> TokenizedExample:
    """Token ids and the response-only mask of one row (see the module docstring for formats)."""
    text, spans = _row_text(tokenizer, row, where, base_model_mode, plain)
    # Chat templates already contain their special tokens; base mode must add none.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= start < e for s, e in spans) and end > start) for start, end in encoded["offset_mapping"]]
    return TokenizedExample(list(encoded["input_ids"]), mask)


def build_sft_examples(
    tokenizer: PreTrainedTokenizerBase,
    located_rows: list[tuple[str, dict]],
    base_model_mode: bool,
    max_length: int,
    overlong: str = "truncate",
    plain: bool = False,
) -> list[dict]:
    """Tokenize every row; enforce ``max_length`` (``truncate`` with a warning, or ``error``).

    Returns dicts with ``input_ids`` and ``completion_mask``, ready for TRL's SFTTrainer.
    """
    examples, truncated, dropped = [], 0, 0
    for where, row in located_rows:
        example = tokenize_example(tokenizer, row, where, base_model_mode, plain)
        if len(example.input_ids) > max_length:
            if overlong == "error":
                raise DataError(f"{where}: {len(example.input_ids)} tokens, longer than max_length={max_length}")
            truncated += 1
            example = TokenizedExample(example.input_ids[:max_length], example.completion_mask[:max_length])
        if not any(example.completion_mask):
            dropped += 1
            continue
        examples.append({"input_ids": example.input_ids, "completion_mask": example.completion_mask})
    if truncated:
        log.warning(f"{truncated} of {len(located_rows)} examples were longer than max_length={max_length} and were truncated")
    if dropped:
        log.warning(f"{dropped} examples had no response tokens left (prompt fills max_length) and were dropped")
    if not examples:
        raise DataError("no usable SFT examples: every row lost its response to truncation (raise max_length)")
    return examples
