"""The hub's dataset layouts, as local files: what posttrain reads from each, derived by hand
from the rows written. Every training command reads its dataset through
``posttrain.data.sources.read_rows`` and its pairs through ``normalize_pairs``."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from posttrain.data.preference import normalize_pairs
from posttrain.data.sources import read_rows
from posttrain.errors import DataError

ROWS = [{"prompt": "What is 1+1?", "completion": "2"}, {"prompt": "What is 2+2?", "completion": "4"}]


def write(kind: str, tmp_path) -> tuple[str, str]:
    """A local dataset of ROWS in the layout ``kind``: (dataset_name, split)."""
    data = Dataset.from_list(ROWS)
    if kind == "parquet":
        data.to_parquet(tmp_path / "d.parquet")
        return str(tmp_path / "d.parquet"), "train"
    if kind == "csv":
        (tmp_path / "d.csv").write_text("prompt,completion\n" + "".join(f"{r['prompt']},{r['completion']}\n" for r in ROWS))
        return str(tmp_path / "d.csv"), "train"
    if kind == "json array":
        (tmp_path / "d.json").write_text(json.dumps(ROWS))
        return str(tmp_path / "d.json"), "train"
    if kind == "jsonl":
        (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
        return str(tmp_path / "d.jsonl"), "train"
    if kind == "save_to_disk Dataset":
        data.save_to_disk(tmp_path / "saved")
        return str(tmp_path / "saved"), "train"
    DatasetDict(train=Dataset.from_list([{"prompt": "other", "completion": "x"}]), test=data).save_to_disk(tmp_path / "dict")
    return str(tmp_path / "dict"), "test"


@pytest.mark.parametrize("kind", ["parquet", "csv", "json array", "jsonl", "save_to_disk Dataset", "save_to_disk DatasetDict (split test)"])
def test_local_files_in_every_format_read_the_same_rows(kind, tmp_path, cell):
    """A local file or save_to_disk directory: the rows as written (CSV cells stay text), each with a location."""
    cell("layouts", f"local {kind}", "read (every command)")
    name, split = write(kind, tmp_path)
    located = read_rows(name, split)
    assert [row for _, row in located] == ROWS
    assert all(where.startswith(name) for where, _ in located)
    assert [row for _, row in read_rows(name, split.replace("train", "train[:1]") if split == "train" else "test[:1]")] == ROWS[:1]


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: cannot read it as parquet"):
        read_rows(str(tmp_path / "bad.parquet"), "train")
    with pytest.raises(DataError, match=r"missing.csv: no such file"):
        read_rows(str(tmp_path / "missing.csv"), "train")
    DatasetDict(train=Dataset.from_list(ROWS)).save_to_disk(tmp_path / "dict")
    with pytest.raises(DataError, match=r"dict: no split 'valid' \(it has train\)"):
        read_rows(str(tmp_path / "dict"), "valid")


USER = {"role": "user", "content": "Hi?"}
GOOD, BAD = {"role": "assistant", "content": "Hello!"}, {"role": "assistant", "content": "Go away."}
EXPECTED = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
PAIR_LAYOUTS = {
    "implicit-prompt conversations (trl-lib/ultrafeedback_binarized)": {"chosen": [USER, GOOD], "rejected": [USER, BAD]},
    "prompt + whole conversations (HuggingFaceH4/ultrafeedback_binarized)": {"prompt": "Hi?", "chosen": [USER, GOOD], "rejected": [USER, BAD]},
    "conversational prompt/chosen/rejected": {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
    "string prompt, conversational responses": {"prompt": "Hi?", "chosen": [GOOD], "rejected": [BAD]},
}


@pytest.mark.parametrize("layout", list(PAIR_LAYOUTS))
def test_pair_layouts_give_the_prompt_once_and_the_responses(layout, cell):
    """Preference pairs: the prompt once, the two responses alone, whatever layout they came in."""
    cell("layouts", layout, "dpo, kto, rm pairs")
    assert normalize_pairs([("d.jsonl:1", PAIR_LAYOUTS[layout])]) == [EXPECTED]


def test_whole_conversations_that_do_not_start_with_the_prompt_are_refused():
    with pytest.raises(DataError, match="d.jsonl:3: field 'chosen' starts with messages that are not the 'prompt'"):
        normalize_pairs([("d.jsonl:3", {"prompt": "Other?", "chosen": [USER, GOOD], "rejected": [USER, BAD]})])
    with pytest.raises(DataError, match="d.jsonl:4: 'chosen' and 'rejected' share no leading messages"):
        normalize_pairs([("d.jsonl:4", {"chosen": [GOOD], "rejected": [BAD]})])


def test_a_pairs_tools_column_goes_to_the_trainer_as_json():
    """TRL's preference trainers render a row's tools with its prompt; posttrain keeps them (as JSON
    text, so rows with different schemas share one column) and drops nothing."""
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    (pair,) = normalize_pairs([("d.jsonl:1", {**PAIR_LAYOUTS["conversational prompt/chosen/rejected"], "tools": [tool]})])
    assert json.loads(pair.pop("tools")) == [tool] and pair == EXPECTED
    with pytest.raises(DataError, match="d.jsonl:2: field 'tools' must be a list of function schemas"):
        normalize_pairs([("d.jsonl:2", {**EXPECTED, "tools": {"name": "lookup"}})])
