"""What a reward model reads: one text per (prompt, response), the same when it is trained
(``posttrain rm``) and when it scores (the ``reward_model`` judge).

A sequence-classification reward model reads its score at the last token of the text, so a model
trained on one rendering and asked about another (a different template, a missing end token)
scores text it never saw. Both sides therefore go through :func:`reward_model_text`, tokenized
without adding special tokens (the template holds any the model needs), with the same
``chat_template_kwargs``: ``posttrain rm`` saves its own beside the model (:data:`RENDERING_FILE`)
and the judge reads them from there.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from posttrain.artifacts import write_json
from posttrain.errors import DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)

RENDERING_FILE = "reward_model_rendering.json"  # in a reward model's directory: how its texts were rendered


def save_rendering(directory: str | Path, chat_template_kwargs: dict) -> None:
    """Record beside a reward model the ``chat_template_kwargs`` its texts were rendered with."""
    write_json(Path(directory) / RENDERING_FILE, {"chat_template_kwargs": chat_template_kwargs})


def load_rendering(directory: str | Path) -> dict:
    """The ``chat_template_kwargs`` a reward model was trained with ({} for one posttrain did not train)."""
    path = Path(directory) / RENDERING_FILE
    return json.loads(path.read_text())["chat_template_kwargs"] if path.is_file() else {}


def _messages(value: str | list[dict], role: str) -> list[dict]:
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def _plain(value: str | list[dict], field: str) -> str:
    """A prompt or response as plain text: a string, or the content of a single message."""
    if isinstance(value, str):
        return value
    if len(value) == 1:
        return value[0]["content"]
    raise DataError(
        f"a {field} of {len(value)} messages needs a chat template, and the tokenizer has none "
        "(base_model_mode removes it); for HH-RLHF transcripts set hh_format: text"
    )


def reward_model_text(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], response: str | list[dict], chat_template_kwargs: dict | None = None
) -> str:
    """The tokenizer's chat template over the prompt (a string is one user turn) and the response
    (a string is one assistant turn), with ``chat_template_kwargs`` (``enable_thinking``); without
    a template, prompt and response joined by a newline."""
    if tokenizer.chat_template:
        messages = _messages(prompt, "user") + _messages(response, "assistant")
        return tokenizer.apply_chat_template(messages, tokenize=False, **(chat_template_kwargs or {}))
    return f"{_plain(prompt, 'prompt')}\n{_plain(response, 'response')}"


def tokenize_reward_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: list[dict], max_length: int, chat_template_kwargs: dict | None = None
) -> list[dict]:
    """``{"chosen_ids", "rejected_ids"}`` per ``{"prompt", "chosen", "rejected"}`` pair (TRL's
    RewardTrainer takes such rows as they are). A pair with a side longer than ``max_length``
    tokens is dropped, as TRL would drop it: cutting the text would cut off the token the score
    is read at. The drops are counted in a warning; dropping every pair is an error.
    """
    rows = []
    for pair in pairs:
        chosen, rejected = (
            tokenizer(reward_model_text(tokenizer, pair["prompt"], pair[side], chat_template_kwargs),
                      add_special_tokens=False)["input_ids"]
            for side in ("chosen", "rejected")
        )
        if len(chosen) <= max_length and len(rejected) <= max_length:
            rows.append({"chosen_ids": chosen, "rejected_ids": rejected})
    if not rows:
        raise DataError(f"every one of the {len(pairs)} pairs is longer than max_length ({max_length} tokens)")
    if len(rows) < len(pairs):
        log.warning(f"dropped {len(pairs) - len(rows)} of {len(pairs)} pairs longer than max_length ({max_length} tokens)")
    return rows
