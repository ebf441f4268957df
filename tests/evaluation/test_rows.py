"""Unit tests for posttrain.evaluation.rows: what an eval JSONL row must hold, and the errors that
name the file, the line and the field."""

from __future__ import annotations

import json
from functools import partial

import pytest

from posttrain.errors import DataError
from posttrain.evaluation.rows import prompt_text, read_eval_rows
from posttrain.evaluation.scorers import reference_problem

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_rows_keep_prompt_reference_and_the_whole_row(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"prompt": "2+2?", "reference": "4", "id": 7}, {"prompt": CHAT, "reference": "Paris"}])
    first, second = read_eval_rows(path)
    assert (first.where, first.prompt, first.reference, first.fields) == (f"{path}:1", "2+2?", "4", {"prompt": "2+2?", "reference": "4", "id": 7})
    assert (second.where, second.prompt, second.reference) == (f"{path}:2", CHAT, "Paris")


def test_field_names_are_configurable(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"question": "2+2?", "answer": 4}])
    (row,) = read_eval_rows(path, prompt_field="question", reference_field="answer")
    assert (row.prompt, row.reference) == ("2+2?", 4)


def test_judges_need_no_reference(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"prompt": "Write a haiku."}])
    (row,) = read_eval_rows(path, needs_reference=False)
    assert row.reference is None


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        ([{"prompt": "a", "reference": "b"}, {"prompt": "c"}], {}, ":2: missing field 'reference'"),
        ([{"question": "a", "reference": "b"}], {}, ":1: missing field 'prompt'"),
        ([{"prompt": "", "reference": "b"}], {}, ":1: field 'prompt' must be a non-empty string or a list of messages"),
        ([{"prompt": 3, "reference": "b"}], {}, ":1: field 'prompt' must be a non-empty string or a list of messages"),
        ([{"prompt": [{"role": "user"}], "reference": "b"}], {}, ":1: field 'prompt'[0] must be an object with string 'role' and 'content'"),
        ([{"prompt": CHAT, "reference": "b"}], {"plain_prompts": True}, ":1: field 'prompt' must be a non-empty string"),
        ([{"prompt": "a", "reference": "x"}, {"prompt": "b", "reference": "8[4"}],
         {"reference_problem": partial(reference_problem, "regex")}, ":2: field 'reference' is not a valid regular expression"),
        ([{"prompt": "a", "reference": "x"}], {"reference_problem": partial(reference_problem, "numeric")},
         ":1: field 'reference' must be a number for the numeric scorer, got 'x'"),
        (['{"prompt": "a", "reference"'], {}, ":1: invalid JSON"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, rows, kwargs, message):
    path = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as error:
        read_eval_rows(path, **kwargs)
    assert str(error.value).startswith(path + message)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_eval_rows(str(tmp_path / "absent.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        read_eval_rows(str(tmp_path / "empty.jsonl"))


def test_prompt_text_is_what_a_judge_reads():
    assert prompt_text("2+2?") == "2+2?"
    assert prompt_text([{"role": "user", "content": "2+2?"}]) == "2+2?"
    assert prompt_text(CHAT) == "system: Be brief.\n\nuser: Capital of France?"
