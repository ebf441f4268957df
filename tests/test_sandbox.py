"""Tests for the code sandbox (posttrain.sandbox): hostile programs are contained, each with an
exact status, and the parent keeps working afterwards."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

import posttrain
from posttrain.errors import PosttrainError
from posttrain.sandbox import OUTPUT_LIMIT, run_python

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def assert_parent_fine():
    """After a hostile program, a normal one still runs normally."""
    result = run_python("print(input() * 2)", stdin="ab\n")
    assert (result.status, result.stdout) == ("ok", "abab\n")


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (from /proc/<pid>/stat)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        if int(stat.rpartition(")")[2].split()[2]) == pgid:  # fields after the name: state ppid pgrp
            members.append(int(entry))
    return members


# ---------------------------------------------------------------------------------------------
# ordinary programs


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


# ---------------------------------------------------------------------------------------------
# time


def test_infinite_loop_times_out():
    """A busy loop hits the CPU limit (SIGXCPU): status timeout, soon after the limit."""
    result = run_python("while True:\n    pass", timeout_s=1)
    assert result.status == "timeout"
    assert result.wall_s < 1 + 2
    assert_parent_fine()


def test_sleeping_program_hits_wall_clock_limit():
    """A program that uses no CPU is stopped by the wall-clock limit (returncode None)."""
    result = run_python("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout_s=0.5)
    assert (result.status, result.returncode, result.stdout) == ("timeout", None, "started\n")
    assert result.wall_s < 0.5 + 2


def test_ignoring_sigxcpu_still_times_out():
    """Ignoring SIGXCPU does not help: the wall-clock limit comes before the hard CPU limit."""
    result = run_python("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass", timeout_s=0.5)
    assert result.status == "timeout"
    assert result.wall_s < 0.5 + 2


# ---------------------------------------------------------------------------------------------
# processes


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import os\nos.forkpty()",
        "import subprocess\nwhile True:\n    subprocess.Popen(['sleep', '60'])",
        "import os\nos.system('sleep 60 &')",
        "import os\nos.posix_spawn('/bin/sleep', ['sleep', '60'], {})",
        "import os\nos.execv('/bin/sleep', ['sleep', '60'])",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    ],
    ids=["fork-bomb", "forkpty", "popen-spam", "system", "posix_spawn", "execv", "multiprocessing"],
)
def test_process_creation_is_blocked_and_nothing_is_left(code):
    """Every way of starting a process fails with the sandbox's error, and no process of the
    program's group survives the call."""
    result = run_python("import os\nprint(os.getpid(), flush=True)\n" + code)
    assert result.status == "error", result.stderr
    assert "sandbox: starting processes is blocked" in result.stderr
    assert group_members(int(result.stdout.split()[0])) == []
    assert_parent_fine()


def test_fork_bomb_that_swallows_errors_times_out_cleanly():
    """A fork loop that catches the error just spins until the time limit; nothing is left."""
    code = "import os\nprint(os.getpid(), flush=True)\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_python(code, timeout_s=0.5)
    assert result.status == "timeout"
    assert group_members(int(result.stdout.split()[0])) == []


def test_signalling_other_processes_is_blocked():
    """The program cannot signal its parent (or anyone else)."""
    result = run_python("import os, signal\nos.kill(os.getppid(), signal.SIGTERM)")
    assert result.status == "error"
    assert "sandbox: signalling other processes is blocked" in result.stderr
    assert_parent_fine()


# ---------------------------------------------------------------------------------------------
# memory


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(10**10)",
        "chunks = []\nwhile True:\n    chunks.append(' ' * 10**6)",
        "items = []\nwhile True:\n    items.append([0] * 1000)",
    ],
    ids=["one-huge-allocation", "growing-list", "many-small-objects"],
)
def test_memory_bomb_is_memory(code):
    """Allocating past the address-space limit ends in MemoryError: status memory."""
    result = run_python(code, memory_mb=128, timeout_s=3)
    assert result.status == "memory", (result.status, result.stderr[-300:])
    assert_parent_fine()


def test_raising_the_limits_is_blocked():
    """The program cannot lift the sandbox's own limits (root could raise hard limits)."""
    result = run_python("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))")
    assert result.status == "error"
    assert "sandbox: changing the sandbox's resource limits is blocked" in result.stderr


# ---------------------------------------------------------------------------------------------
# secrets, files and network


def test_parent_environment_does_not_reach_the_program(monkeypatch):
    """Secrets in the parent's environment are not in the child's, nor readable from /proc."""
    monkeypatch.setenv("OPENAI_API_KEY", "secret-xyz")
    result = run_python("import os\nprint(dict(os.environ))")
    assert result.status == "ok"
    assert "secret-xyz" not in result.stdout and "OPENAI_API_KEY" not in result.stdout
    proc = run_python("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert proc.status == "error" and "secret-xyz" not in proc.stdout + proc.stderr
    assert "sandbox: reading" in proc.stderr


def test_writing_outside_the_directory_is_blocked(tmp_path):
    """Writing, creating, renaming or deleting outside the working directory fails; nothing changes."""
    target, keep = tmp_path / "escape.txt", tmp_path / "keep.txt"
    keep.write_text("keep")
    attempts = [
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
        f"import os\nos.chdir({str(tmp_path)!r})\nopen('escape.txt', 'w')",
        f"open('../../../../../../..{target}', 'w')",
        f"import os\nos.remove({str(keep)!r})",
        f"import os\nos.rename({str(keep)!r}, 'stolen.txt')",
        f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w')",
    ]
    for code in attempts:
        result = run_python(code)
        assert result.status == "error", code
        assert "sandbox:" in result.stderr and "is blocked" in result.stderr, (code, result.stderr)
    assert not target.exists()
    assert keep.read_text() == "keep"
    assert_parent_fine()


def test_reading_outside_the_standard_library_is_blocked():
    """Files outside the working directory and the standard library cannot be read (nor the
    task's own problems, which hold the expected outputs)."""
    package_file = Path(posttrain.__file__).parent / "tasks" / "data" / "python_problems.jsonl"
    for path in ("/etc/passwd", str(package_file)):
        result = run_python(f"print(open({path!r}).read()[:50])")
        assert result.status == "error"
        assert f"sandbox: reading {path} is blocked" in result.stderr
    assert run_python("import os\nos.listdir('/')").status == "error"


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.socket()",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import socket\nsocket.getaddrinfo('example.com', 80)",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)",
    ],
    ids=["socket", "connect", "dns", "urllib"],
)
def test_network_is_blocked(code):
    """Creating sockets, connecting and name lookups fail with the sandbox's error."""
    result = run_python(code)
    assert result.status == "error"
    assert "sandbox: network access is blocked" in result.stderr


def test_native_code_is_blocked():
    """ctypes (a way around every Python-level check) cannot be imported."""
    result = run_python("import ctypes\nctypes.CDLL(None)")
    assert result.status == "error"
    assert "sandbox: native code (ctypes) is blocked" in result.stderr


# ---------------------------------------------------------------------------------------------
# output and cleanup


def test_large_output_is_capped():
    """A megabyte of output comes back cut to OUTPUT_LIMIT bytes with a note of the total."""
    result = run_python("print('y' * 10**6)")
    assert result.status == "ok"
    assert result.stdout.startswith("y" * 1000)
    assert result.stdout.endswith(f"[sandbox: output truncated to {OUTPUT_LIMIT} of {10**6 + 1} bytes]\n")
    assert len(result.stdout) < OUTPUT_LIMIT + 100


def test_printing_forever_stops_at_the_file_size_limit():
    """Endless printing fails at the 16 MiB file-size limit, quickly, with capped output."""
    result = run_python("while True:\n    print('x' * 1000)", timeout_s=5)
    assert result.status == "error"
    assert "File too large" in result.stderr
    assert result.wall_s < 5
    assert len(result.stdout) < OUTPUT_LIMIT + 100
    assert_parent_fine()


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
