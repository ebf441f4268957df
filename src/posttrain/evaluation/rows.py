"""The rows of a user's JSONL that ``posttrain eval`` evaluates on, read and checked up front.

A row holds a prompt (a string, or a chat as a list of ``{role, content}`` messages) and, for
scorers that compare with one, a reference::

    {"prompt": "What is 6 x 7?", "reference": "42"}

Every row is checked before any model loads; a bad one is a :class:`DataError` naming the file,
the line and the field (``data.jsonl:3: missing field 'reference'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from posttrain.data.jsonl import iter_jsonl
from posttrain.data.chat import check_messages
from posttrain.errors import DataError


@dataclass
class EvalRow:
    where: str  # "data.jsonl:12", for messages about this row
    prompt: str | list[dict]
    reference: Any  # None when the scorer needs no reference and the row has none
    fields: dict  # the whole row as read, for a verifier


def read_eval_rows(
    path: str,
    prompt_field: str = "prompt",
    reference_field: str = "reference",
    needs_reference: bool = True,
    reference_problem: Callable[[Any], str | None] | None = None,
    plain_prompts: bool = False,
) -> list[EvalRow]:
    """Every row of ``path``, checked.

    ``needs_reference``: every row must have a reference (judges need none). ``reference_problem``
    says what is wrong with one (None when it is fine). ``plain_prompts`` refuses chat prompts (a
    base model reads text only).
    """
    rows = []
    for number, row in iter_jsonl(path):
        where = f"{path}:{number}"
        if prompt_field not in row:
            raise DataError(f"{where}: missing field '{prompt_field}'")
        prompt = row[prompt_field]
        if isinstance(prompt, list) and not plain_prompts:
            check_messages(prompt, where, prompt_field)
        elif not isinstance(prompt, str) or not prompt.strip():
            kinds = "a non-empty string" if plain_prompts else "a non-empty string or a list of messages"
            raise DataError(f"{where}: field '{prompt_field}' must be {kinds}")
        if needs_reference and reference_field not in row:
            raise DataError(f"{where}: missing field '{reference_field}'")
        problem = reference_problem(row[reference_field]) if reference_problem and reference_field in row else None
        if problem:
            raise DataError(f"{where}: field '{reference_field}' {problem}")
        rows.append(EvalRow(where, prompt, row.get(reference_field), row))
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty)")
    return rows


def prompt_text(prompt: str | list[dict]) -> str:
    """A prompt as a judge reads it: the string itself, the content of a single-message chat, or
    a longer chat written out turn by turn (``role: content``)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"{message['role']}: {message['content']}" for message in prompt)
