"""The rows of a user's dataset that ``posttrain eval`` evaluates on, read and checked up front.

A row holds a prompt (a string, or a chat as a list of ``{role, content}`` messages) and, for
scorers that compare with one, a reference::

    {"prompt": "What is 6 x 7?", "reference": "42"}

The dataset is anything a training job reads (:func:`posttrain.data.sources.read_rows`): a local
``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file, a ``save_to_disk`` directory or a hub id. Every
row is checked before any model loads; a bad one is a :class:`DataError` naming the file, the line
and the field (``data.jsonl:3: missing field 'reference'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from posttrain.data.chat import check_messages
from posttrain.data.sources import read_rows
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
    split: str = "test",
    dataset_config: str | None = None,
) -> list[EvalRow]:
    """Every row of ``path`` that ``split`` selects (a local file is one split: only its slice
    applies), checked. ``dataset_config``: a hub dataset's subset.

    ``needs_reference``: every row must have a reference (judges need none). ``reference_problem``
    says what is wrong with one (None when it is fine). ``plain_prompts`` refuses chat prompts (a
    base model reads text only).
    """
    rows = []
    for where, row in read_rows(path, split, dataset_config):
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
    return rows


def prompt_text(prompt: str | list[dict]) -> str:
    """A prompt as a judge reads it: the string itself, the content of a single-message chat, or
    a longer chat written out turn by turn (``role: content``)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"{message['role']}: {message['content']}" for message in prompt)
