"""Tests for the code sandbox (posttrain.tasks.sandbox, public as posttrain.sandbox): ordinary
programs, exit statuses, tracebacks, arguments and cleanup. Hostile programs (limits and escapes, each with an exact status, the parent
unharmed and nothing left behind) are in tests/robustness/test_sandbox_escapes.py."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest

from posttrain.errors import PosttrainError
from posttrain.tasks.sandbox import run_python

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def test_program_reads_stdin_and_prints():
    """A normal program gets stdin and its stdout back, status ok, exit 0."""
    result = run_python("import sys\nnumbers = sys.stdin.read().split()\nprint(sum(map(int, numbers)))", stdin="1 2\n3\n")
    assert (result.status, result.returncode, result.stdout, result.stderr) == ("ok", 0, "6\n", "")
    assert 0 < result.wall_s < 5

def test_syntax_error_is_error_without_sandbox_frames():
    """A syntax error is status error; stderr shows the SyntaxError in main.py and no prelude frame."""
    result = run_python("print(1")
    assert (result.status, result.returncode) == ("error", 1)
    assert 'File "main.py", line 1' in result.stderr
    assert "SyntaxError" in result.stderr
    assert "<string>" not in result.stderr

def test_runtime_error_traceback_names_the_program_lines():
    """An uncaught exception is status error with the program's own frames in the traceback."""
    result = run_python("def f(x):\n    return 1 // x\n\nf(0)\n")
    assert result.status == "error"
    assert 'File "main.py", line 4' in result.stderr and 'File "main.py", line 2, in f' in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: integer division or modulo by zero")
    assert "<string>" not in result.stderr

def test_exit_status_and_builtin_exit():
    """exit(n) works without site (status error, returncode n); exit(0) is ok."""
    assert run_python("exit(3)").returncode == 3
    assert run_python("print('x'); exit(0)").status == "ok"

def test_standard_library_is_available_and_hashing_is_reproducible():
    """Common stdlib modules import; string hashes (so set order) are the same run to run."""
    code = (
        "import collections, dataclasses, fractions, heapq, itertools, json, math, random, re, statistics\n"
        "print(hash('abc'), list({'x', 'y', 'z'}))"
    )
    first, second = run_python(code), run_python(code)
    assert first.status == "ok", first.stderr
    assert first.stdout == second.stdout

def test_program_may_write_in_its_own_directory():
    """Files in the working directory (and tempfile, via TMPDIR) are allowed."""
    code = (
        "import tempfile\nopen('notes.txt', 'w').write('hi')\nprint(open('notes.txt').read())\n"
        "with tempfile.NamedTemporaryFile('w') as f:\n    f.write('x')\n"
    )
    result = run_python(code)
    assert (result.status, result.stdout) == ("ok", "hi\n")

def test_killed_by_signal():
    """Death by a signal other than SIGXCPU is status killed with a negative returncode."""
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert (result.status, result.returncode) == ("killed", -9)

def test_bad_arguments():
    """Non-positive timeouts and memory limits too small for the interpreter are ValueErrors."""
    with pytest.raises(ValueError, match="timeout_s"):
        run_python("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_python("pass", memory_mb=16)

def test_platform_without_resource_limits(monkeypatch):
    """Without the resource module (not POSIX) the sandbox refuses with a PosttrainError."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "resource" else find_spec(name, *a))
    with pytest.raises(PosttrainError, match="POSIX resource limits"):
        run_python("pass")

def test_working_directory_is_removed(monkeypatch, tmp_path):
    """The program's directory and everything it wrote there are gone after the call."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    result = run_python("import os\nopen('big.bin', 'wb').write(b'0' * 10**6)\nprint(os.getcwd())")
    assert result.status == "ok"
    workdir = Path(result.stdout.strip())
    assert workdir.parent == root
    assert not workdir.exists()
    assert list(root.iterdir()) == []

def test_code_is_not_on_the_command_line():
    """The program travels as a file, so its text is not in the child's argv."""
    result = run_python("import sys\n# marker-4711\nprint(sys.orig_argv)")
    assert result.status == "ok"
    assert "marker-4711" not in result.stdout


def test_runs_without_seccomp_and_namespaces(monkeypatch):
    """Where neither the seccomp filter nor namespaces are available, programs still run (the
    audit hook and limits alone)."""
    import posttrain.tasks.sandbox as sandbox

    monkeypatch.setattr(sandbox, "_seccomp_prefix", lambda: ())
    monkeypatch.setattr(sandbox, "_namespace_prefix", lambda: ())
    result = run_python("import os\nos.nice(1)\nprint(input() * 2)", stdin="ab\n")
    assert (result.status, result.stdout) == ("ok", "abab\n")
    assert "starting processes is blocked" in run_python("import os\nos.fork()").stderr


def test_the_public_name_is_the_tasks_sandbox():
    import posttrain.sandbox
    import posttrain.tasks.sandbox

    assert posttrain.sandbox.run_python is posttrain.tasks.sandbox.run_python
    assert posttrain.sandbox.SandboxResult is posttrain.tasks.sandbox.SandboxResult
