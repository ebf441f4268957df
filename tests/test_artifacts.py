"""Unit tests for posttrain.artifacts: atomic JSON/text writes and their error messages."""

from __future__ import annotations

import json
import os
from pathlib import Path
import stat

import pytest

from posttrain.artifacts import atomic_open, write_json, write_text
from posttrain.errors import PosttrainError


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_write_json_content_and_format(tmp_path):
    """write_json writes indented JSON with a trailing newline, keeping key order and unicode."""
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": [1, 2], "u": "é"})
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ],\n  "u": "\\u00e9"\n}\n'
    assert json.loads(text) == {"b": 1, "a": [1, 2], "u": "é"}


def test_write_json_stringifies_unknown_objects(tmp_path):
    """Objects json cannot encode (paths, ...) are written via str()."""
    path = tmp_path / "m.json"
    write_json(path, {"dir": tmp_path})
    assert json.loads(path.read_text()) == {"dir": str(tmp_path)}


def test_write_json_replaces_existing_file_without_leftovers(tmp_path):
    """A second write replaces the whole file; no .tmp siblings are left."""
    path = tmp_path / "m.json"
    write_json(path, {"x": list(range(100))})
    write_json(path, {"y": 1})
    assert json.loads(path.read_text()) == {"y": 1}
    assert _names(tmp_path) == ["m.json"]


def test_write_text_creates_parents_and_replaces(tmp_path):
    """write_text creates missing parent directories and replaces content exactly."""
    path = tmp_path / "a" / "b" / "note.txt"
    write_text(path, "first version, longer\n")
    write_text(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    assert _names(path.parent) == ["note.txt"]


def test_write_text_is_an_atomic_replace(tmp_path):
    """The target is replaced by rename (a new inode), so an open reader keeps the old content."""
    path = tmp_path / "t.txt"
    write_text(path, "old")
    with open(path, encoding="utf-8") as reader:
        inode = os.stat(path).st_ino
        write_text(path, "new")
        assert reader.read() == "old"
    assert os.stat(path).st_ino != inode
    assert path.read_text() == "new"


def test_exception_inside_atomic_open_keeps_old_file(tmp_path):
    """An exception while writing leaves the old file untouched, removes the temp file, and propagates."""
    path = tmp_path / "t.txt"
    write_text(path, "old")
    with pytest.raises(KeyError):
        with atomic_open(path) as handle:
            handle.write("partial new content")
            raise KeyError("boom")
    assert path.read_text() == "old"
    assert _names(tmp_path) == ["t.txt"]


def test_write_json_unserialisable_keeps_old_file(tmp_path):
    """A JSON encoding failure (circular structure) leaves the old file and no temp file."""
    path = tmp_path / "m.json"
    write_json(path, {"ok": True})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        write_json(path, {"loop": loop})
    assert json.loads(path.read_text()) == {"ok": True}
    assert _names(tmp_path) == ["m.json"]


def test_atomic_open_binary_mode(tmp_path):
    """Binary mode writes bytes unchanged."""
    path = tmp_path / "b.bin"
    with atomic_open(path, "wb") as handle:
        handle.write(b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"


def test_unwritable_directory_names_path(tmp_path):
    """Writing into a directory nobody may create files in raises PosttrainError naming the path.

    A chmod-ed directory stays writable for root (as in CI), so this uses /proc, where not even
    root can create files."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    unwritable = locked if not os.access(locked, os.W_OK) else Path("/proc")
    target = unwritable / "posttrain-out.json"
    try:
        with pytest.raises(PosttrainError) as info:
            write_json(target, {"a": 1})
        assert str(info.value).startswith(f"cannot write {target}:")
        assert not target.exists()
    finally:
        locked.chmod(stat.S_IRWXU)


def test_parent_is_a_file_names_path(tmp_path):
    """A parent path that is a regular file (works even as root) raises PosttrainError naming the target."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    target = blocker / "sub" / "out.txt"
    with pytest.raises(PosttrainError) as info:
        write_text(target, "x")
    assert str(info.value).startswith(f"cannot write {target}:")
    assert blocker.read_text() == "not a directory"


def test_target_is_a_directory_cleans_up_temp(tmp_path):
    """If the final rename fails (target is a directory) the error names the path and no temp file remains."""
    target = tmp_path / "out.json"
    target.mkdir()
    with pytest.raises(PosttrainError) as info:
        write_json(target, {"a": 1})
    assert str(info.value).startswith(f"cannot write {target}:")
    assert _names(tmp_path) == ["out.json"]
    assert target.is_dir()


def test_permission_denied_message_names_path_and_reason(tmp_path, monkeypatch):
    """A permission error creating the temp file (simulated, so it also runs as root) names path and reason."""
    import posttrain.artifacts as artifacts

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(artifacts.tempfile, "mkstemp", deny)
    target = tmp_path / "out.json"
    with pytest.raises(PosttrainError) as info:
        write_json(target, {"a": 1})
    assert str(info.value) == f"cannot write {target}: Permission denied"
    assert not target.exists()
