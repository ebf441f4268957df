"""Preference pairs: ``{"prompt", "chosen", "rejected"}`` rows, validated and normalised; and
unpaired rows ``{"prompt", "completion", "label"}`` for KTO (:func:`normalize_unpaired`).

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

import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from posttrain.config import config_field
from posttrain.data.base_format import base_prompt, base_response
from posttrain.data.chat import check_messages, check_tools
from posttrain.data.mixture import MIXTURE_HELP, check_dataset_keys
from posttrain.errors import DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)


@dataclass
class PreferenceDataArguments:
    """The data keys of every command that trains on preference pairs (``dpo``, ``kto``, ``rm``)."""

    dataset_name: str = config_field("", help="Pairs: a .jsonl file (prompt/chosen/rejected), task:<name>, or a hub dataset id (e.g. Anthropic/hh-rlhf).")
    dataset_train_split: str = config_field("train", help="Split, optionally sliced: train, train[:1%].")
    task_options: dict = config_field({}, help="Options of a task:<name> dataset (its pairs are built by the task's verifier).")
    dataset_mixture: list[dict] = config_field([], help=MIXTURE_HELP)
    hh_format: Literal["messages", "text"] = config_field(
        "messages", help="HH-RLHF transcripts become chat messages, or stay as Human/Assistant text."
    )

    def __post_init__(self):
        super().__post_init__()  # the training settings' checks
        self.dataset_name = check_dataset_keys(self.dataset_name, self.dataset_train_split, self.dataset_mixture)

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_hh_transcript(chosen: str, rejected: str, where: str) -> tuple[str, str, str]:
    """``(prompt, chosen_response, rejected_response)`` of an HH-RLHF pair.

    The prompt runs through the last ``"\\n\\nAssistant:"`` of the chosen transcript, and the
    rejected transcript must start with the same prompt.
    """
    prompt = hh_prompt(chosen, where, "chosen")
    if not rejected.startswith(prompt):
        raise DataError(f"{where}: 'chosen' and 'rejected' transcripts differ before the last assistant turn")
    return prompt, chosen[len(prompt) :], rejected[len(prompt) :]


def hh_prompt(transcript: str, where: str, field: str) -> str:
    """The prompt of an HH-RLHF transcript: everything through its last ``"\\n\\nAssistant:"``,
    the turn a model is to write."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        raise DataError(f"{where}: field '{field}' has no '\\n\\nAssistant:' turn (not an HH-RLHF transcript)")
    return transcript[: cut + len(ASSISTANT)]


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


def split_implicit_prompt(row: dict, where: str) -> dict:
    """A pair of whole conversations with no ``prompt`` (trl-lib/ultrafeedback_binarized): the
    prompt is the messages both share, the responses what follows, from an assistant turn on."""
    chosen = check_messages(row["chosen"], where, "chosen")
    rejected = check_messages(row["rejected"], where, "rejected")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] == "assistant":  # a response starts at an assistant turn
        shared -= 1
    if not shared:
        raise DataError(f"{where}: 'chosen' and 'rejected' share no leading messages, so there is no prompt "
                        "(give a 'prompt' field)")
    return {**row, "prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def drop_repeated_prompt(row: dict, where: str) -> dict:
    """A ``prompt`` beside whole conversations that repeat it (HuggingFaceH4/ultrafeedback_binarized):
    the repeated messages come off the responses, so the prompt is trained once, not twice. A string
    prompt is one user turn."""
    prompt = [{"role": "user", "content": row["prompt"]}] if isinstance(row["prompt"], str) else row["prompt"]
    prompt = check_messages(prompt, where, "prompt")
    sides = {side: check_messages(row[side], where, side) for side in ("chosen", "rejected")}
    if all(messages[0]["role"] == "assistant" for messages in sides.values()):
        return row  # the responses are the assistant turns alone, as TRL's conversational layout has them
    for side in ("chosen", "rejected"):
        head = [{k: m[k] for k in ("role", "content")} for m in sides[side][: len(prompt)]]
        if head != [{k: m[k] for k in ("role", "content")} for m in prompt]:
            raise DataError(f"{where}: field '{side}' starts with messages that are not the 'prompt' "
                            "(a whole conversation must begin with the prompt's turns)")
    return {**row, "prompt": prompt, **{side: sides[side][len(prompt):] for side in ("chosen", "rejected")}}


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
        if "prompt" not in row and isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
            row = split_implicit_prompt(row, where)
        elif "prompt" in row and isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
            row = drop_repeated_prompt(row, where)
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
        pairs.append(_format_row(row, ("chosen", "rejected"), base_model_mode, where))
    for reason, count in skipped.items():
        log.warning(f"skipped {count} of {len(located_rows)} pairs: {reason}")
    if not pairs:
        raise DataError(f"no usable preference pairs ({', '.join(f'{c} {r}' for r, c in skipped.items()) or 'no rows'})")
    return pairs


def normalize_unpaired(
    located_rows: list[tuple[str, dict]],
    base_model_mode: bool = False,
    hh_format: Literal["messages", "text"] = "messages",
) -> list[dict]:
    """Validated ``{"prompt", "completion", "label"}`` rows (``label`` true: a desirable completion),
    conversational in chat mode, for KTO.

    Rows that carry ``label`` (or a ``completion``) are unpaired data. Any other row is a pair
    (so a dataset_mixture may hold both): it goes through :func:`normalize_pairs` and becomes a
    desirable row (its chosen response) and an undesirable one (its rejected response). Rows with
    an empty completion are skipped, counted and reported.
    """
    pairs, unpaired = [], []
    for located in located_rows:
        (unpaired if "label" in located[1] or "completion" in located[1] else pairs).append(located)
    rows = [{"prompt": pair["prompt"], "completion": pair[response], "label": response == "chosen"}
            for pair in (normalize_pairs(pairs, base_model_mode, hh_format) if pairs else [])
            for response in ("chosen", "rejected")]
    skipped = 0
    for where, row in unpaired:
        for field in ("prompt", "completion", "label"):
            if field not in row:
                raise DataError(f"{where}: missing field '{field}'")
        if not isinstance(row["label"], bool):
            raise DataError(f"{where}: field 'label' must be true (desirable) or false (undesirable), got {row['label']!r}")
        _text_of(row["prompt"], where, "prompt")
        if not _text_of(row["completion"], where, "completion").strip():
            skipped += 1
            continue
        rows.append({**_format_row(row, ("completion",), base_model_mode, where), "label": row["label"]})
    if skipped:
        log.warning(f"skipped {skipped} of {len(located_rows)} rows: empty completion")
    if not rows:
        raise DataError(f"no usable rows ({skipped} with an empty completion)" if skipped else "no usable rows (no rows)")
    return rows


def _format_row(row: dict, responses: tuple[str, ...], base_model_mode: bool, where: str) -> dict:
    """The prompt and the ``responses`` fields of ``row`` in the training format: one user and one
    assistant turn each in chat mode (message lists stay as they are), ``Instruction: X\\nResponse:``
    and `` Y\\nEND`` in base-model mode (an HH transcript stays as it is)."""
    fields = ("prompt", *responses)
    if base_model_mode:
        if not all(isinstance(row[field], str) for field in fields):
            raise DataError(f"{where}: base_model_mode needs string {'/'.join(fields)}")
        if row["prompt"].startswith(HUMAN):
            return {field: row[field] for field in fields}
        return {"prompt": base_prompt(row["prompt"]), **{field: base_response(row[field]) for field in responses}}

    def as_messages(value: str | list[dict], role: str) -> list[dict]:
        return [{"role": role, "content": value}] if isinstance(value, str) else value

    formatted = {"prompt": as_messages(row["prompt"], "user"), **{field: as_messages(row[field], "assistant") for field in responses}}
    tools = check_tools(row.get("tools"), where)
    if tools:  # TRL's trainers render them with the prompt; JSON text, as one Arrow column holds any schema
        formatted["tools"] = json.dumps(tools)
    return formatted
