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

Chat rows (with an optional ``tools`` column of function schemas and ``chat_template_kwargs``)
are rendered and masked by :mod:`posttrain.data.chat`, on the one rendering that is trained. The
other formats' masks are computed on characters and mapped to tokens with the tokenizer's
offsets, so they are exact whatever the tokenizer merges across the prompt/response boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from posttrain.data.base_format import RESPONSE_MARKER, base_format
from posttrain.data.chat import check_messages, check_tools, render_for_training, with_template_arguments
from posttrain.errors import DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)

@dataclass
class TokenizedExample:
    input_ids: list[int]
    completion_mask: list[int]  # 1 where the token is part of the response (gets loss)


def _chat_example(tokenizer: PreTrainedTokenizerBase, row: dict, messages: list[dict], where: str,
                  prompt_turns: int = 0) -> TokenizedExample:
    """A conversation on its training rendering (:mod:`posttrain.data.chat`), the loss on every
    assistant turn after the first ``prompt_turns`` messages (a prompt/completion row's prompt)."""
    tools = check_tools(row.get("tools"), where)
    kwargs = row.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise DataError(f"{where}: field 'chat_template_kwargs' must be an object")
    ids, mask = render_for_training(tokenizer, messages, where, tools, kwargs)
    prompt_replies = sum(m["role"] == "assistant" for m in messages[:prompt_turns])
    if prompt_replies:  # assistant turns inside the prompt are context: their runs of the mask go
        mask = _drop_runs(mask, prompt_replies, where)
    if not any(mask):
        raise DataError(f"{where}: no assistant message to train on")
    return TokenizedExample(ids, mask)


def _drop_runs(mask: list[int], count: int, where: str) -> list[int]:
    """``mask`` with its first ``count`` runs of ones set to zero."""
    mask, seen, inside = list(mask), 0, False
    for i, bit in enumerate(mask):
        if bit and not inside:
            seen += 1
        inside = bool(bit)
        if bit and seen <= count:
            mask[i] = 0
    if seen <= count:
        raise DataError(f"{where}: the completion's assistant turns cannot be told apart from the prompt's")
    return mask


def _row_text(
    tokenizer: PreTrainedTokenizerBase, row: dict, where: str, base_model_mode: bool, plain: bool = False
) -> tuple[str, list[tuple[int, int]]] | TokenizedExample:
    """The text and its trained character spans of a template-free row, or (chat rows) the
    tokenized example itself: a chat template's masks are computed on its own tokens."""
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
        return _chat_example(tokenizer, row, check_messages(row["messages"], where, "messages"), where)
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
    return _chat_example(tokenizer, row, prompt + completion, where, prompt_turns=len(prompt))


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, row: dict, where: str, base_model_mode: bool, plain: bool = False
) -> TokenizedExample:
    """Token ids and the response-only mask of one row (see the module docstring for formats)."""
    rendered = _row_text(tokenizer, row, where, base_model_mode, plain)
    if isinstance(rendered, TokenizedExample):
        return rendered
    text, spans = rendered
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
    chat_template_kwargs: dict | None = None,
) -> list[dict]:
    """Tokenize every row (chat rows with the job's ``chat_template_kwargs``, a row's own column
    winning); enforce ``max_length`` (``truncate`` with a warning, or ``error``).

    Returns dicts with ``input_ids`` and ``completion_mask``, ready for TRL's SFTTrainer.
    """
    examples, truncated, dropped = [], 0, 0
    for where, row in located_rows:
        (row,) = with_template_arguments([row], chat_template_kwargs or {})
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
