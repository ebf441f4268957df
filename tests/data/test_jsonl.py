"""Unit tests for posttrain.data.jsonl: validated reading, atomic writing, durable appending."""

from __future__ import annotations

import json

import pytest

from posttrain.data.jsonl import append_jsonl, iter_jsonl, read_jsonl, write_jsonl
from posttrain.errors import DataError


def _write(path, text: str | bytes):
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


# ---------------------------------------------------------------------------------------------
# reading


def test_iter_jsonl_yields_line_numbers_and_skips_blank_lines(tmp_path):
    """Blank (and whitespace-only) lines are skipped; numbers are the file's 1-based line numbers."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n\n   \n{"a": 2}\n\t\n{"a": 3}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2}), (6, {"a": 3})]


def test_read_jsonl_returns_rows(tmp_path):
    """read_jsonl returns just the rows, in order, unicode intact."""
    path = _write(tmp_path / "d.jsonl", '{"p": "héllo"}\n{"p": "日本"}\n')
    assert read_jsonl(path) == [{"p": "héllo"}, {"p": "日本"}]


def test_last_line_without_newline_is_read(tmp_path):
    """A complete last line without a trailing newline is a normal row."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 2}')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_crlf_line_endings(tmp_path):
    """Windows line endings are tolerated."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\r\n{"a": 2}\r\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_malformed_json_names_file_line_and_column(tmp_path):
    """Bad JSON raises DataError with path:line and the parser's message and column."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n\n{"a": }\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:3: invalid JSON (Expecting value at column 7)"


@pytest.mark.parametrize("line, kind", [("[1, 2]", "list"), ('"text"', "str"), ("3", "int"), ("null", "NoneType")])
def test_non_object_row_is_error(tmp_path, line, kind):
    """A JSON value that is not an object names its type and line."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n' + line + "\n")
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:2: expected a JSON object, got {kind}"


def test_missing_required_field(tmp_path):
    """A row lacking a required field names the file, line and field."""
    path = _write(tmp_path / "d.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path, required={"prompt": str, "completion": str})
    assert str(info.value) == f"{path}:2: missing field 'completion'"


def test_wrong_field_type(tmp_path):
    """A field of the wrong type names file, line, field, expected and actual type."""
    path = _write(tmp_path / "d.jsonl", '{"prompt": 5}\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path, required={"prompt": str})
    assert str(info.value) == f"{path}:1: field 'prompt' must be str, got int"


def test_wrong_field_type_with_tuple_of_types(tmp_path):
    """With several accepted types the message lists them joined by 'or'."""
    path = _write(tmp_path / "d.jsonl", '{"prompt": "x", "messages": null}\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path, required={"messages": (list, str)})
    assert str(info.value) == f"{path}:1: field 'messages' must be list or str, got NoneType"


def test_required_types_accepted(tmp_path):
    """Rows matching the required types pass (a tuple accepts any of its types)."""
    path = _write(tmp_path / "d.jsonl", '{"m": [1]}\n{"m": "s"}\n')
    assert read_jsonl(path, required={"m": (list, str)}) == [{"m": [1]}, {"m": "s"}]


def test_non_utf8_bytes_name_line_and_byte(tmp_path):
    """Undecodable bytes raise DataError naming path:line and the byte offset in the line."""
    path = _write(tmp_path / "d.jsonl", b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}:2: not valid UTF-8 (byte 10)"


def test_missing_file(tmp_path):
    """A missing file is a DataError naming it (for both iter_jsonl and read_jsonl)."""
    path = tmp_path / "absent.jsonl"
    with pytest.raises(DataError, match="no such file") as info:
        list(iter_jsonl(path))
    assert str(info.value) == f"{path}: no such file"
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(path)


def test_directory_is_not_a_file(tmp_path):
    """A directory path is reported like a missing file."""
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_read_jsonl_empty_file_is_error(tmp_path, content):
    """read_jsonl rejects a file with no rows; iter_jsonl just yields nothing."""
    path = _write(tmp_path / "d.jsonl", content)
    assert list(iter_jsonl(path)) == []
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    assert str(info.value) == f"{path}: no rows (the file is empty)"


def test_errors_are_raised_lazily_after_good_rows(tmp_path):
    """iter_jsonl yields the good rows before the bad line raises."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 2}\nnot json\n')
    seen = []
    with pytest.raises(DataError, match=":3: invalid JSON"):
        for _, row in iter_jsonl(path):
            seen.append(row)
    assert seen == [{"a": 1}, {"a": 2}]


# ---------------------------------------------------------------------------------------------
# torn tails


def test_allow_torn_tail_skips_unterminated_last_line(tmp_path):
    """A broken last line without a newline (killed writer) is skipped with allow_torn_tail."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert [row for _, row in iter_jsonl(path, allow_torn_tail=True)] == [{"a": 1}, {"a": 2}]


def test_torn_tail_without_flag_is_error(tmp_path):
    """Without allow_torn_tail the same torn line is an error on its line."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 3, "b"')
    with pytest.raises(DataError, match=r":2: invalid JSON"):
        list(iter_jsonl(path))


def test_allow_torn_tail_does_not_skip_terminated_bad_last_line(tmp_path):
    """A bad last line that *does* end in a newline is a real error, not a torn tail."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 3, "b"\n')
    with pytest.raises(DataError, match=r":2: invalid JSON"):
        list(iter_jsonl(path, allow_torn_tail=True))


def test_allow_torn_tail_does_not_skip_bad_middle_line(tmp_path):
    """A bad line followed by more lines is an error even with allow_torn_tail."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n{broken\n{"a": 2}')
    with pytest.raises(DataError, match=r":2: invalid JSON"):
        list(iter_jsonl(path, allow_torn_tail=True))


def test_allow_torn_tail_keeps_complete_unterminated_last_line(tmp_path):
    """An unterminated last line that parses is still yielded."""
    path = _write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": 2}')
    assert [row for _, row in iter_jsonl(path, allow_torn_tail=True)] == [{"a": 1}, {"a": 2}]


def test_allow_torn_tail_skips_line_torn_inside_multibyte_character(tmp_path):
    """A writer killed mid-character leaves invalid UTF-8 on the torn last line; it is still a torn tail."""
    full = json.dumps({"text": "日本語"}, ensure_ascii=False).encode("utf-8")
    torn = full[: full.index("本".encode("utf-8")) + 1]  # cut after the first byte of a 3-byte character
    path = _write(tmp_path / "d.jsonl", b'{"a": 1}\n' + torn)
    assert [row for _, row in iter_jsonl(path, allow_torn_tail=True)] == [{"a": 1}]


# ---------------------------------------------------------------------------------------------
# writing


def test_write_jsonl_round_trip(tmp_path):
    """write_jsonl writes one JSON object per line (unicode unescaped) that read_jsonl reads back."""
    rows = [{"prompt": "é", "n": 1}, {"prompt": "b", "n": [1, 2]}]
    path = tmp_path / "sub" / "out.jsonl"
    write_jsonl(path, rows)
    assert path.read_text(encoding="utf-8") == '{"prompt": "é", "n": 1}\n{"prompt": "b", "n": [1, 2]}\n'
    assert read_jsonl(path) == rows


def test_write_jsonl_replaces_and_leaves_no_temp_files(tmp_path):
    """A second write replaces the file completely; no temporary siblings remain."""
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": i} for i in range(5)])
    write_jsonl(path, [{"b": 1}])
    assert read_jsonl(path) == [{"b": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_jsonl_accepts_generator(tmp_path):
    """Rows may be any iterable, e.g. a generator."""
    path = tmp_path / "out.jsonl"
    write_jsonl(path, ({"i": i} for i in range(3)))
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_write_jsonl_failure_keeps_previous_content(tmp_path):
    """An unserialisable row mid-write raises, leaves the old file intact and no temp file."""
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"old": 1}])
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_jsonl(path, [{"new": 1}, {"bad": object()}, {"new": 3}])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_jsonl_failure_on_new_file_creates_nothing(tmp_path):
    """If the first write of a file fails, the target never appears."""
    path = tmp_path / "new.jsonl"

    def rows():
        yield {"a": 1}
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        write_jsonl(path, rows())
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# appending


def test_append_jsonl_creates_and_appends(tmp_path):
    """append_jsonl creates parent dirs and the file, then appends after existing rows."""
    path = tmp_path / "deep" / "dir" / "a.jsonl"
    append_jsonl(path, [{"i": 0}])
    append_jsonl(path, [{"i": 1}, {"i": 2}])
    assert path.read_text(encoding="utf-8") == '{"i": 0}\n{"i": 1}\n{"i": 2}\n'


def test_append_jsonl_cuts_torn_tail_before_appending(tmp_path):
    """A torn last line is cut off so the new row starts on its own line."""
    path = _write(tmp_path / "a.jsonl", '{"i": 0}\n{"i": 1}\n{"i": 2, "x')
    append_jsonl(path, [{"i": 3}])
    assert path.read_text(encoding="utf-8") == '{"i": 0}\n{"i": 1}\n{"i": 3}\n'
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 3}]


def test_append_jsonl_torn_single_line_file(tmp_path):
    """A file holding only a torn line (no newline at all) is emptied before appending."""
    path = _write(tmp_path / "a.jsonl", '{"i": 0, "tor')
    append_jsonl(path, [{"i": 1}])
    assert path.read_text(encoding="utf-8") == '{"i": 1}\n'


def test_append_jsonl_to_empty_existing_file(tmp_path):
    """Appending to an existing empty file just writes the rows."""
    path = _write(tmp_path / "a.jsonl", "")
    append_jsonl(path, [{"i": 1}])
    assert read_jsonl(path) == [{"i": 1}]


def test_append_jsonl_no_rows_still_cuts_tail(tmp_path):
    """Appending nothing leaves complete lines and removes a torn tail."""
    path = _write(tmp_path / "a.jsonl", '{"i": 0}\n{"i"')
    append_jsonl(path, [])
    assert path.read_text(encoding="utf-8") == '{"i": 0}\n'
