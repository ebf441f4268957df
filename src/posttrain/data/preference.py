"""Preference pairs: ``{"prompt", "chosen", "rejected"}`` rows, validated and normalised.

Accepted rows:
  * ``prompt``/``chosen``/``rejected`` as strings, or as message lists (conversational);
  * Anthropic HH-RLHF transcripts, ``{"chosen", "rejected"}`` with no prompt, where both are
    ``"\\n\\nHuman: … \\n\\nAssistant: …"`` dialogues sharing everything up to the last
    ``"\\n\\nAssistant:"``: split into prompt (through that marker) and the two responses, as
    text or as messages.

Degenerate pairs (empty response, chosen identical to rejected) cannot teach a preference: they
are skipped, counted and reported; malformed rows are errors naming the location and field.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Literal

from posttrain.data.base_format import base_prompt, base_response
from posttrain.data.sft import check_messages
from posttrain.errors import DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_hh_transcript(chosen: str, rejected: str, where: str) -> tuple[str, str, str]:
    """``(prompt, chosen_response, rejected_response)`` of an HH-RLHF pair.

    The prompt runs through the last ``"\\n\\nAssistant:"`` of the chosen transcript, and the
    rejected transcript must start with the same prompt.
    """
    cut = chosen.rfind(ASSISTANT)
    if cut < 0:
        raise DataError(f"{where}: field 'chosen' has no '\\n\\nAssistant:' turn (not an HH-RLHF transcript)")
    prompt = chosen[: cut + len(ASSISTANT)]
    if not rejected.startswith(prompt):
        raise DataError(f"{where}: 'chosen' and 'rejected' transcripts differ before the last assistant turn")
    return prompt, chosen[len(prompt) :], rejected[len(prompt) :]


def hh_to_messages(transcript: str, where: str) -> list[dict]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{"role": "user", ...}, {"role": "assistant", ...}]``."""
    pieces = _TURN.split(transcript)
    if pieces[0].strip():
        raise DataError(f"{where}: text before the first '\\n\\nHuman:' turn")
    messages = []
    for speaker, content in zip(pieces[1::2], pieces[2::2]):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    if not messages:
        raise DataError(f"{where}: no '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    return messages


def _text_of(value: object, where: str, field: str) -> str:
    """The text of a response (string, or the contents of a message list) for emptiness checks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # messages, each with a string role and content (an empty list is an empty response)
        return "".join(m["content"] for m in check_messages(value, where, field)) if value else ""
    raise DataError(f"{where}: field '{field}' must be a string or a list of messages")


def normalize_pairs(
    located_rows: list[tuple[str, dict]],
    base_model_mode: bool = False,
    hh_format: Literal["messages", "text"] = "messages",
) -> list[dict]:
    """Validated ``{"prompt", "chosen", "rejected"}`` rows, conversational in chat mode.

    In chat mode string rows become one user turn and one assistant turn, so the tokenizer's chat
    template applies; in base-model mode they become ``Instruction: X\\nResponse:`` + `` Y\\nEND``.
    """
    pairs, skipped = [], Counter()
    for where, row in located_rows:
        for field in ("chosen", "rejected"):
            if field not in row:
                raise DataError(f"{where}: missing field '{field}'")
        if "prompt" not in row:
            if not (isinstance(row["chosen"], str) and isinstance(row["rejected"], str)):
                raise DataError(f"{where}: missing field 'prompt'")
            prompt, chosen, rejected = split_hh_transcript(row["chosen"], row["rejected"], where)
            if hh_format == "messages" and not base_model_mode:
                prompt_messages = hh_to_messages(prompt.removesuffix(ASSISTANT), where)
                row = {
                    "prompt": prompt_messages,
                    "chosen": [{"role": "assistant", "content": chosen.strip()}],
                    "rejected": [{"role": "assistant", "content": rejected.strip()}],
                }
            else:
                row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        chosen_text = _text_of(row["chosen"], where, "chosen")
        rejected_text = _text_of(row["rejected"], where, "rejected")
        _text_of(row["prompt"], where, "prompt")
        if not chosen_text.strip() or not rejected_text.strip():
            skipped["empty response"] += 1
            continue
        if chosen_text.strip() == rejected_text.strip():
            skipped["chosen identical to rejected"] += 1
            continue
        pairs.append(_format_pair(row, base_model_mode, where))
    for reason, count in skipped.items():
        log.warning(f"skipped {count} of {len(located_rows)} pairs: {reason}")
    if not pairs:
        raise DataError(f"no usable preference pairs ({', '.join(f'{c} {r}' for r, c in skipped.items()) or 'no rows'})")
    return pairs


def _format_pair(row: dict, base_model_mode: bool, where: str) -> dict:
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    if base_model_mode:
        if not all(isinstance(v, str) for v in (prompt, chosen, rejected)):
            raise DataError(f"{where}: base_model_mode needs string prompt/chosen/rejected")
        if prompt.startswith(HUMAN):  # an HH transcript stays as it is
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        return {"prompt": base_prompt(prompt), "chosen": base_response(chosen), "rejected": base_response(rejected)}
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(chosen, str):
        chosen = [{"role": "assistant", "content": chosen}]
    if isinstance(rejected, str):
        rejected = [{"role": "assistant", "content": rejected}]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
