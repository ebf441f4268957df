"""Unit tests for posttrain.tasks.sources (and posttrain.data.sources): split slices and located rows from JSONL files and tasks."""

from __future__ import annotations

import json

import pytest

from posttrain.data.sources import split_slice
from posttrain.errors import ConfigError, DataError
from posttrain.tasks import get_task
from posttrain.tasks.sources import load_rows


def _jsonl(path, rows, blank_after_first: bool = False):
    lines = [json.dumps(row) for row in rows]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# split_slice


@pytest.mark.parametrize(
    "split, name, start, stop",
    [
        ("train", "train", None, None),
        ("test", "test", None, None),
        ("train[:100]", "train", None, "100"),
        ("train[10:]", "train", "10", None),
        ("train[10%:20%]", "train", "10%", "20%"),
        ("train[:1%]", "train", None, "1%"),
        ("test[-5:]", "test", "-5", None),
        ("train[:]", "train", None, None),
        ("  train[:3]  ", "train", None, "3"),
    ],
)
def test_split_slice_parses(split, name, start, stop):
    """A split name with an optional [start:stop] slice (ints or percents) is parsed; bounds stay unresolved."""
    assert split_slice(split) == (name, slice(start, stop))


@pytest.mark.parametrize("split", ["train[5]", "train[a:b]", "train[:10%%]", "", "tr-ain", "train[1.5:]", "train[:5",
                                   "[:5]", "train[1:2:3]"])
def test_split_slice_invalid(split):
    """Anything else is a DataError quoting the split and showing the accepted forms."""
    with pytest.raises(DataError) as info:
        split_slice(split)
    assert str(info.value) == f"cannot read split '{split}' (expected e.g. train, train[:100], train[10%:20%])"


# ---------------------------------------------------------------------------------------------
# load_rows from JSONL


def test_load_rows_jsonl_locations_are_path_and_line(tmp_path):
    """Rows of a JSONL file come with 'path:line' locations (blank lines keep the real numbering)."""
    path = _jsonl(tmp_path / "d.jsonl", [{"i": 0}, {"i": 1}, {"i": 2}], blank_after_first=True)
    assert load_rows(str(path)) == [(f"{path}:1", {"i": 0}), (f"{path}:3", {"i": 1}), (f"{path}:4", {"i": 2})]


def test_load_rows_existing_file_without_jsonl_suffix(tmp_path):
    """An existing local file is read as JSONL whatever its suffix."""
    path = _jsonl(tmp_path / "rows.txt", [{"i": 0}])
    assert load_rows(str(path)) == [(f"{path}:1", {"i": 0})]


def test_load_rows_missing_jsonl_file(tmp_path):
    """A missing .jsonl path is a DataError (not a hub lookup)."""
    path = tmp_path / "absent.jsonl"
    with pytest.raises(DataError, match="no such file"):
        load_rows(str(path))


def test_load_rows_jsonl_int_slices(tmp_path):
    """Integer slices select rows by position, keeping their file locations."""
    path = _jsonl(tmp_path / "d.jsonl", [{"i": i} for i in range(10)])
    assert [row["i"] for _, row in load_rows(str(path), "train[:3]")] == [0, 1, 2]
    assert [row["i"] for _, row in load_rows(str(path), "train[7:]")] == [7, 8, 9]
    assert [row["i"] for _, row in load_rows(str(path), "train[-2:]")] == [8, 9]
    located = load_rows(str(path), "train[4:6]")
    assert located == [(f"{path}:5", {"i": 4}), (f"{path}:6", {"i": 5})]


def test_load_rows_jsonl_percent_slices(tmp_path):
    """Percent slices are resolved against the row count (20 rows: 10%..20% is rows 2 and 3)."""
    path = _jsonl(tmp_path / "d.jsonl", [{"i": i} for i in range(20)])
    assert [row["i"] for _, row in load_rows(str(path), "train[10%:20%]")] == [2, 3]
    assert [row["i"] for _, row in load_rows(str(path), "train[:25%]")] == [0, 1, 2, 3, 4]
    assert [row["i"] for _, row in load_rows(str(path), "train[90%:]")] == [18, 19]


def test_load_rows_invalid_split_is_data_error(tmp_path):
    """A malformed split fails before reading anything."""
    path = _jsonl(tmp_path / "d.jsonl", [{"i": 0}])
    with pytest.raises(DataError, match="cannot read split"):
        load_rows(str(path), "train[x]")


def test_load_rows_jsonl_bad_line_propagates(tmp_path):
    """JSONL errors keep their file:line message."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"i": 0}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path.name}:2: invalid JSON"):
        load_rows(str(path))


@pytest.mark.parametrize("split", ["train[5:5]", "train[10:]", "train[:0%]"])
def test_load_rows_empty_slice_is_error(tmp_path, split):
    """A slice that selects nothing is a DataError naming the dataset and split."""
    path = _jsonl(tmp_path / "d.jsonl", [{"i": i} for i in range(5)])
    with pytest.raises(DataError) as info:
        load_rows(str(path), split)
    assert str(info.value) == f"{path}: split '{split}' selects none of its 5 rows"


def test_load_rows_empty_file_is_error(tmp_path):
    """An empty JSONL file gives no rows, which is a DataError."""
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.jsonl \(train\): no rows"):
        load_rows(str(path))


# ---------------------------------------------------------------------------------------------
# load_rows from a task


def test_load_rows_task_rows_and_locations():
    """'task:arithmetic' with task_options gives the task's split with 'task:name[i]' locations."""
    options = {"digits": 1, "test_size": 10, "seed": 3}
    located = load_rows("task:arithmetic", "train", task_options=options)
    expected = get_task("arithmetic", **options).make_dataset("train")
    assert len(located) == 71
    assert [row for _, row in located] == expected
    assert [loc for loc, _ in located[:3]] == ["task:arithmetic[0]", "task:arithmetic[1]", "task:arithmetic[2]"]


def test_load_rows_task_test_split():
    """The split name picks the task split."""
    located = load_rows("task:arithmetic", "test", task_options={"digits": 1, "test_size": 10})
    assert [row for _, row in located] == get_task("arithmetic", digits=1, test_size=10).make_dataset("test")


def test_load_rows_task_slices_keep_original_indices():
    """Slicing a task split keeps each row's index in the full split as its location."""
    options = {"digits": 1, "test_size": 1}  # 80 training rows
    full = load_rows("task:arithmetic", "train", task_options=options)
    assert load_rows("task:arithmetic", "train[5:8]", task_options=options) == full[5:8]
    assert [loc for loc, _ in load_rows("task:arithmetic", "train[5:8]", task_options=options)] == [
        "task:arithmetic[5]", "task:arithmetic[6]", "task:arithmetic[7]"]
    assert load_rows("task:arithmetic", "train[:10%]", task_options=options) == full[:8]
    assert load_rows("task:arithmetic", "train[50%:]", task_options=options) == full[40:]


def test_load_rows_task_default_options():
    """Without task_options the task defaults apply (2 digits, 300 test problems)."""
    assert len(load_rows("task:arithmetic", "test")) == 300


def test_load_rows_unknown_task():
    """An unknown task name is a ConfigError."""
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        load_rows("task:nope")


def test_load_rows_task_bad_split():
    """A split name the task does not have is an error."""
    with pytest.raises(ConfigError, match="split must be 'train', 'test' or 'documents'"):
        load_rows("task:arithmetic", "validation", task_options={"digits": 1, "test_size": 1})


def test_load_rows_task_empty_slice_is_error():
    """An empty slice of a task split is a DataError."""
    with pytest.raises(DataError, match=r"task:arithmetic: split 'test\[1:1\]' selects none of its 5 rows"):
        load_rows("task:arithmetic", "test[1:1]", task_options={"digits": 1, "test_size": 5})
