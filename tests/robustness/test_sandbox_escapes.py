"""Sandbox escapes: hostile programs run through ``posttrain.sandbox.run_python``.

Every case checks three things: the program is contained (its status and the sandbox's message
say what stopped it), the parent test process is unharmed (alive, no signal received, its
environment and files unchanged, a normal program still runs), and everything is released (no
process of the program's group or session left, its working directory removed, no file
descriptor leaked in the parent). Runs as root and as an ordinary user; where user/network
namespaces are unavailable the hook-only cases still hold.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import resource
import select
import signal
import socket
import sysconfig
import tempfile
from pathlib import Path

import pytest

import posttrain
import posttrain.tasks.sandbox as sandbox
from posttrain.tasks.sandbox import FILE_LIMIT, OUTPUT_LIMIT, run_python

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# The program's first line reports its pid (the sandbox makes it the leader of its own process
# group and session), so the checks can look for anything it left behind.
PID_PRELUDE = "import os as _os\nprint('pid', _os.getpid(), flush=True)\ndel _os\n"
WATCHED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
SECCOMP_MACHINES = ("x86_64", "aarch64")  # where sandbox.py installs its seccomp filter


def leftovers(pid: int) -> list[int]:
    """Live (or unreaped) processes in the process group or session that ``pid`` led."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat.rpartition(")")[2].split()  # state ppid pgrp session ...
        if pid in (int(fields[2]), int(fields[3])):
            found.append(int(entry))
    return found


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def contained(monkeypatch, tmp_path):
    """``contained(code, **run_python_kwargs)`` runs ``code`` in the sandbox, checks that the
    parent is unharmed and everything was released, and returns the SandboxResult (its stdout
    without the pid line)."""
    workroot = tmp_path / "sandbox-tmp"
    workroot.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(workroot))
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in WATCHED_SIGNALS}

    def run(code: str, **kwargs):
        gc.collect()  # files an earlier test left to the garbage collector close now, not during the count
        environment, descriptors = dict(os.environ), fd_count()
        result = run_python(PID_PRELUDE + code, **kwargs)
        first, _, rest = result.stdout.partition("\n")
        assert first.startswith("pid "), (result.status, result.stdout[:200], result.stderr[-500:])
        pid = int(first.split()[1])
        assert leftovers(pid) == [], "processes of the sandboxed program survived the call"
        assert list(workroot.iterdir()) == [], "the working directory was not removed"
        assert fd_count() <= descriptors, "file descriptors leaked in the parent"
        assert dict(os.environ) == environment
        normal = run_python("print(input() * 2)", stdin="ab\n")
        assert (normal.status, normal.stdout) == ("ok", "abab\n"), "the sandbox broke after this program"
        assert received == [], f"the parent received signals {received}"
        return dataclasses.replace(result, stdout=rest)

    yield run
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.fixture(params=["namespaces", "no-namespaces"])
def layers(request, monkeypatch):
    """Run a case with the user/network namespaces (where this machine has them) and without
    them, as on machines where unprivileged namespaces are disabled: the audit hook alone."""
    if request.param == "namespaces":
        if not sandbox._namespace_prefix():
            pytest.skip("user/network namespaces are not available here")
    else:
        monkeypatch.setattr(sandbox, "_namespace_prefix", lambda: ())
    return request.param


def last_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------
# time


def test_infinite_loop(contained, outcome):
    """Infinite loop: `while True: pass` with a 1 s limit"""
    result = contained("while True:\n    pass", timeout_s=1)
    assert result.status == "timeout"
    assert result.returncode in (-signal.SIGXCPU, None)  # SIGXCPU, or the wall clock on a busy machine
    outcome(f"status={result.status}, returncode={result.returncode} (SIGXCPU at the CPU limit); no process left")


def test_sleeping_forever(contained, outcome):
    """Sleeping forever: `time.sleep(60)` with a 0.5 s limit (uses no CPU)"""
    result = contained("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout_s=0.5)
    assert (result.status, result.returncode, result.stdout) == ("timeout", None, "started\n")
    assert result.wall_s < 60
    outcome(f"status={result.status}, returncode=None: killed at the wall-clock limit "
            f"(timeout + {sandbox.WALL_GRACE_S:g} s); output before it kept")


def test_ignoring_the_cpu_limit_signal(contained, outcome):
    """Ignoring SIGXCPU: SIG_IGN, then a busy loop with a 0.5 s limit"""
    result = contained("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass", timeout_s=0.5)
    assert result.status == "timeout"
    assert result.returncode is None
    outcome(f"status={result.status}, returncode=None: the wall-clock limit comes before the hard CPU limit")


# ---------------------------------------------------------------------------------------------
# processes


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import os\nos.forkpty()",
        "import os\nos.system('sleep 60 &')",
        "import subprocess\nwhile True:\n    subprocess.Popen(['sleep', '60'], start_new_session=True)",
        "import subprocess\nsubprocess.run('sleep 60', shell=True)",
        "import os\nos.posix_spawn('/bin/sleep', ['sleep', '60'], {})",
        "import os\nos.execv('/bin/sleep', ['sleep', '60'])",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()",
        "import importlib.util as u\nspec = u.find_spec('_posixsubprocess')\nu.module_from_spec(spec)",
    ],
    ids=["fork-bomb", "forkpty", "os.system", "subprocess.Popen", "subprocess.run-shell", "posix_spawn",
         "execv", "multiprocessing", "_posixsubprocess-by-spec"],
)
def test_starting_processes(contained, outcome, code):
    """Fork bomb / os.system / subprocess: every way of starting a process"""
    result = contained(code)
    assert (result.status, result.returncode) == ("error", 1), result.stderr[-500:]
    assert "sandbox: starting processes is blocked" in last_line(result)
    outcome(f"status={result.status}; {last_line(result)}; no process left")


def test_fork_bomb_swallowing_errors(contained, outcome):
    """Fork bomb that catches the errors: `os.fork()` in a `try` loop until the time limit"""
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = contained(code, timeout_s=0.5)
    assert result.status == "timeout"
    outcome(f"status={result.status} after {result.wall_s:.1f} s; every fork refused; no process left")


# ---------------------------------------------------------------------------------------------
# memory and recursion


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(10**10)",
        "chunks = []\nwhile True:\n    chunks.append(' ' * 10**6)",
        "items = []\nwhile True:\n    items.append([0] * 1000)",
    ],
    ids=["one-huge-allocation", "growing-strings", "many-small-objects"],
)
def test_memory_bomb(contained, outcome, code):
    """Memory bomb: allocating past a 128 MB address-space limit"""
    result = contained(code, memory_mb=128, timeout_s=3)
    assert result.status == "memory", (result.status, result.stderr[-300:])
    outcome(f"status={result.status}; {last_line(result) or 'killed after a failed allocation'}")


def test_raising_the_limits(contained, outcome):
    """Raising the limits: `resource.setrlimit(RLIMIT_AS, (-1, -1))`"""
    result = contained("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))")
    assert result.status == "error"
    assert "sandbox: changing the sandbox's resource limits is blocked" in last_line(result)
    outcome(f"status={result.status}; {last_line(result)}")


@pytest.mark.parametrize(
    "code, allowed",
    [
        ("def f(n):\n    return f(n + 1) + 1\nf(0)", {"error"}),
        ("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)", {"timeout", "memory"}),
        ("import json, sys\nsys.setrecursionlimit(10**8)\njson.loads('[' * 10**6)", {"killed", "error", "memory", "timeout"}),
    ],
    ids=["default-limit", "limit-raised", "C-stack-overflow"],
)
def test_deep_recursion(contained, outcome, code, allowed):
    """Deep recursion: unbounded Python recursion, with the limit raised, and a C-stack overflow"""
    result = contained(code, timeout_s=1, memory_mb=128)
    assert result.status in allowed, (result.status, result.returncode, result.stderr[-300:])
    if allowed == {"error"}:
        assert last_line(result).startswith("RecursionError")
    how = last_line(result) if result.returncode == 1 else f"returncode {result.returncode}"
    outcome(f"status={result.status}; {how}")


# ---------------------------------------------------------------------------------------------
# output


def test_huge_output(contained, outcome):
    """Huge output: one 10 MB print"""
    result = contained("print('y' * 10**7)")
    assert result.status == "ok"
    assert result.stdout.startswith("y" * 1000)
    note = f"[sandbox: output truncated to {OUTPUT_LIMIT} of "
    assert note in result.stdout[-100:]
    total = int(result.stdout.rsplit(" of ", 1)[1].split()[0])
    assert 10**7 + 1 < total < 10**7 + 30  # the line and the pid line before it
    assert len(result.stdout) < OUTPUT_LIMIT + 100
    outcome(f"status=ok; stdout cut to {OUTPUT_LIMIT} bytes with a note of the ~10 MB total")


def test_printing_forever(contained, outcome):
    """Printing forever: `while True: print('x' * 1000)`"""
    result = contained("while True:\n    print('x' * 1000)", timeout_s=5)
    assert result.status == "error"
    assert "File too large" in result.stderr
    assert len(result.stdout) < OUTPUT_LIMIT + 100
    outcome(f"status={result.status}; stopped at the {FILE_LIMIT // 2**20} MiB file-size limit "
            f"(EFBIG), stdout cut to {OUTPUT_LIMIT} bytes")


# ---------------------------------------------------------------------------------------------
# secrets in the environment


@pytest.mark.parametrize(
    "code",
    [
        "import os\nprint(dict(os.environ))\nprint(dict(os.environb))",
        "print(open('/proc/self/environ', 'rb').read())",
        "import os\nfd = os.open('/proc/self/environ', os.O_RDONLY)\nprint(os.read(fd, 65536))",
        "import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())",
        "import os\nprint(open(f'/proc/self/../{os.getppid()}/environ', 'rb').read())",
        "import os\nos.chdir('/proc')\nprint(open(f'{os.getppid()}/environ', 'rb').read())",
        "print(open('/proc/1/environ', 'rb').read())",
    ],
    ids=["os.environ", "proc-self-environ", "os.open-proc-self", "proc-parent-environ", "proc-dotdot",
         "chdir-proc", "proc-1-environ"],
)
def test_reading_the_parents_secrets(contained, outcome, monkeypatch, code):
    """Reading environment variables: the parent's OPENAI_API_KEY and HF_TOKEN"""
    secrets = {"OPENAI_API_KEY": "sk-escape-test-4f1e9c", "HF_TOKEN": "hf_escapeTest7d2b0a"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    result = contained(code)
    seen = result.stdout + result.stderr
    for name, value in secrets.items():
        assert value not in seen and name not in result.stdout
    if result.status == "ok":  # os.environ: readable, but built from nothing
        assert "'PATH': '/usr/bin:/bin'" in result.stdout
        outcome("status=ok; the environment holds only PATH, locale, PYTHONHASHSEED, HOME, TMPDIR: no secret")
    else:
        assert result.status == "error" and "sandbox: reading /proc/" in last_line(result)
        outcome(f"status={result.status}; {last_line(result)}; no secret in the output")


# ---------------------------------------------------------------------------------------------
# files


def outside_paths(tmp_path: Path) -> dict[str, Path]:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("outside-secret-9c41\n")
    return {
        "etc-passwd": Path("/etc/passwd"),
        "the-repo": Path(posttrain.__file__).resolve().parent / "sandbox.py",
        "task-answers": Path(posttrain.__file__).resolve().parent / "tasks" / "data" / "python_problems.jsonl",
        "home": Path.home() / ".bashrc",
        "parent-cmdline": Path(f"/proc/{os.getpid()}/cmdline"),
        "parent-fd": Path(f"/proc/{os.getpid()}/fd/0"),
        "parent-memory": Path(f"/proc/{os.getpid()}/mem"),
        "a-file-in-tmp": secret,
        # outside a virtual environment, installed packages (posttrain too) live in here
        "stdlib-site-packages": Path(sysconfig.get_paths()["stdlib"]) / "site-packages" / "README.txt",
    }


@pytest.mark.parametrize("target", ["etc-passwd", "the-repo", "task-answers", "home", "parent-cmdline", "parent-fd",
                                    "parent-memory", "a-file-in-tmp", "stdlib-site-packages"])
def test_reading_files_outside(contained, outcome, tmp_path, target):
    """Reading files outside the work directory"""
    path = outside_paths(tmp_path)[target]
    result = contained(f"print(open({str(path)!r}, 'rb').read()[:200])")
    assert result.status == "error"
    assert f"sandbox: reading {path} is blocked" in last_line(result)
    assert "outside-secret" not in result.stdout and "root:" not in result.stdout
    outcome(f"status={result.status}; {last_line(result)}")


@pytest.mark.parametrize("code", ["import os\nprint(os.listdir('/'))", "import os\nprint(os.listdir({home!r}))",
                                  "import os\nprint(list(os.scandir({tmp!r})))", "import glob\nprint(glob.glob({tmp!r} + '/*/*'))"],
                         ids=["listdir-root", "listdir-home", "scandir-tmp", "glob-tmp"])
def test_listing_directories_outside(contained, outcome, tmp_path, code):
    """Listing directories outside the work directory"""
    outside_paths(tmp_path)
    result = contained(code.format(home=str(Path.home()), tmp=str(tmp_path)))
    assert "secret.txt" not in result.stdout and "etc" not in result.stdout
    if result.status == "ok":  # glob swallows the PermissionError: it sees nothing
        assert result.stdout == "[]\n"
        outcome("status=ok; the listing is empty (the sandbox's PermissionError is swallowed by glob)")
    else:
        assert "sandbox: reading" in last_line(result)
        outcome(f"status={result.status}; {last_line(result)}")


WRITES = {
    "open-w": "open({target!r}, 'w').write('x')",
    "os.open-creat": "import os\nos.close(os.open({target!r}, os.O_WRONLY | os.O_CREAT))",
    "chdir-then-relative": "import os\nos.chdir({dir!r})\nopen('escape.txt', 'w')",
    "dot-dot": "open('../../../../../../../..' + {target!r}, 'w')",
    "append-existing": "open({keep!r}, 'a').write('changed')",
    "remove": "import os\nos.remove({keep!r})",
    "rename": "import os\nos.rename({keep!r}, 'stolen.txt')",
    "chmod": "import os\nos.chmod({keep!r}, 0o777)",
    "truncate": "import os\nos.truncate({keep!r}, 0)",
    "symlink": "import os\nos.symlink({target!r}, 'link')\nopen('link', 'w')",
    "mkdir": "import os\nos.mkdir({dir!r} + '/made')",
    "shutil.copy": "import shutil\nopen('x', 'w').write('x')\nshutil.copy('x', {target!r})",
    # not audited: refused by the seccomp filter (mknodat)
    "mkfifo": "import os\nos.mkfifo({target!r})",
    "mknod": "import os, stat\nos.mknod({target!r}, 0o600 | stat.S_IFREG)",
}


@pytest.mark.parametrize("attempt", list(WRITES))
def test_writing_outside(contained, outcome, tmp_path, attempt):
    """Writing outside the work directory"""
    target, keep = tmp_path / "escape.txt", tmp_path / "keep.txt"
    keep.write_text("keep")
    keep.chmod(0o644)
    if attempt in ("mkfifo", "mknod") and os.uname().machine not in SECCOMP_MACHINES:
        pytest.skip("the seccomp filter is installed only on x86-64 and AArch64 Linux")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = contained(WRITES[attempt].format(target=str(target), keep=str(keep), dir=str(tmp_path)))
    assert result.status == "error", result.stderr[-300:]
    if attempt in ("mkfifo", "mknod"):
        assert last_line(result) == "PermissionError: [Errno 1] Operation not permitted"
    else:
        assert "sandbox:" in last_line(result) and "is blocked" in last_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert keep.read_text() == "keep" and keep.stat().st_mode & 0o777 == 0o644
    outcome(f"status={result.status}; {last_line(result)}; nothing outside changed")


# ---------------------------------------------------------------------------------------------
# network


@pytest.fixture
def listener(request):
    """A server socket of the parent's that the program tries to reach: (family, address)."""
    family = request.param
    if family == "AF_UNIX":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(f"\0posttrain-escape-{os.getpid()}")  # abstract: no file, per network namespace
    elif family == "AF_INET6":
        if not socket.has_ipv6:
            pytest.skip("no IPv6")
        server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            server.bind(("::1", 0))
        except OSError:
            server.close()
            pytest.skip("no IPv6 loopback")
    else:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
    server.listen()
    yield family, server.getsockname()
    server.close()


@pytest.mark.parametrize("listener", ["AF_INET", "AF_INET6", "AF_UNIX"], indirect=True)
def test_network_sockets(contained, outcome, listener, layers):
    """Network sockets: connecting to a server of the parent's over TCP/IPv4, TCP/IPv6, a Unix socket"""
    family, address = listener
    code = f"import socket\ns = socket.socket(socket.{family}, socket.SOCK_STREAM)\ns.connect({address!r})\nprint('connected')"
    result = contained(code)
    assert result.status == "error" and "connected" not in result.stdout
    assert "sandbox: network access is blocked" in last_line(result)
    outcome(f"status={result.status} ({layers}); {last_line(result)}; the parent's server got no connection")


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.getaddrinfo('example.com', 80)",
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53))",
        "import socket\nsocket.socketpair()",
        "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=2)",
        "import http.client\nhttp.client.HTTPConnection('127.0.0.1', 80, timeout=2).request('GET', '/')",
    ],
    ids=["dns", "udp", "socketpair", "urllib", "http.client"],
)
def test_other_network_access(contained, outcome, code):
    """Network sockets: name lookups, UDP, socket pairs, urllib, http.client"""
    result = contained(code)
    assert result.status == "error"
    assert "sandbox: network access is blocked" in last_line(result)
    outcome(f"status={result.status}; {last_line(result)}")


def test_parent_server_saw_nothing(contained, outcome):
    """Network sockets: a TCP server of the parent's is never reached (checked on the server side)"""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        code = f"import socket\nsocket.create_connection({server.getsockname()!r}, timeout=2).sendall(b'hello')"
        result = contained(code)
        ready, _, _ = select.select([server], [], [], 0.2)
    finally:
        server.close()
    assert result.status == "error"
    assert ready == [], "the program connected to the parent's server"
    outcome(f"status={result.status}; {last_line(result)}; no connection arrived")


# ---------------------------------------------------------------------------------------------
# signals


@pytest.mark.parametrize(
    "code, message",
    [
        ("import os, signal\nos.kill(os.getppid(), signal.SIGUSR1)", "sandbox: signalling other processes is blocked"),
        ("import os, signal\nos.kill(os.getppid(), signal.SIGTERM)", "sandbox: signalling other processes is blocked"),
        ("import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGUSR1)", "sandbox: signalling other processes is blocked"),
        ("import os, signal\nos.kill(-os.getpgid(os.getppid()), signal.SIGUSR1)", "sandbox: signalling other processes is blocked"),
        ("import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGUSR1)", "PermissionError"),
    ],
    ids=["kill-SIGUSR1", "kill-SIGTERM", "killpg", "kill-negative-group", "pidfd_send_signal"],
)
def test_signals_to_the_parent(contained, outcome, layers, code, message):
    """Signals to the parent: os.kill, os.killpg, a pidfd (not audited: stopped by seccomp)"""
    if "pidfd" in code and (os.uname().machine not in SECCOMP_MACHINES or not hasattr(os, "pidfd_open")):
        pytest.skip("the seccomp filter is installed only on x86-64 and AArch64 Linux")
    result = contained(code)  # the fixture fails the test if the parent received a signal
    assert result.status == "error", (result.status, result.stderr[-300:])
    assert message in last_line(result)
    outcome(f"status={result.status} ({layers}); {last_line(result)}; the parent received nothing")


def parent_scheduling() -> tuple:
    return (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getaffinity(0), os.sched_getscheduler(0),
            resource.getrlimit(resource.RLIMIT_NOFILE))


@pytest.mark.parametrize(
    "code, message",
    [
        ("import os\nos.setpriority(os.PRIO_PROCESS, os.getppid(), 19)", "[Errno 1] Operation not permitted"),
        ("import os\nos.setpriority(os.PRIO_PGRP, os.getpgid(os.getppid()), 19)", "[Errno 1] Operation not permitted"),
        ("import os\nos.sched_setaffinity(os.getppid(), {{{cpu}}})", "[Errno 1] Operation not permitted"),
        ("import os\nos.sched_setscheduler(os.getppid(), os.SCHED_IDLE, os.sched_param(0))", "[Errno 1] Operation not permitted"),
        ("import resource, os\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE, (16, 16))",
         "sandbox: changing resource limits is blocked"),
    ],
    ids=["renice", "renice-group", "pin-to-one-cpu", "SCHED_IDLE", "prlimit"],
)
def test_slowing_down_the_parent(contained, outcome, code, message):
    """Signals to the parent: renicing, pinning, descheduling or limiting it (not audited: stopped by seccomp)"""
    if os.uname().machine not in SECCOMP_MACHINES:
        pytest.skip("the seccomp filter is installed only on x86-64 and AArch64 Linux")
    before = parent_scheduling()
    try:
        result = contained(code.format(cpu=min(before[1])))
        after = parent_scheduling()
    finally:  # put the test process back if the program got through
        if os.getpriority(os.PRIO_PROCESS, 0) != before[0]:
            os.setpriority(os.PRIO_PROCESS, 0, before[0])
        os.sched_setaffinity(0, before[1])
        if os.sched_getscheduler(0) != before[2]:
            os.sched_setscheduler(0, before[2], os.sched_param(0))
        resource.setrlimit(resource.RLIMIT_NOFILE, before[3])
    assert after == before, "the program changed the parent's scheduling or limits"
    assert result.status == "error" and message in last_line(result), result.stderr[-300:]
    outcome(f"status={result.status}; {last_line(result)}; the parent's nice value, CPUs, policy and limits unchanged")


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))\nwhile True:\n    pass",
        "import os\nos.nice(-5)\nwhile True:\n    pass",
        "import os\nos.chroot('/var')",
    ],
    ids=["real-time-busy-loop", "negative-nice", "chroot"],
)
def test_privileged_calls(contained, outcome, layers, code):
    """Starving the machine or changing the root: real-time scheduling, a negative nice value, chroot (root can, unaudited)"""
    if os.uname().machine not in SECCOMP_MACHINES:
        pytest.skip("the seccomp filter is installed only on x86-64 and AArch64 Linux")
    result = contained(code, timeout_s=1)
    assert result.status == "error", (result.status, result.stderr[-300:])
    assert last_line(result).startswith("PermissionError: [Errno 1] Operation not permitted")
    outcome(f"status={result.status} ({layers}); {last_line(result)}")


def test_signalling_its_own_group_is_allowed(contained, outcome):
    """Signals to the parent: a program may still signal itself and its own group"""
    result = contained("import os, signal\nos.killpg(0, signal.SIGTERM)")
    assert (result.status, result.returncode) == ("killed", -signal.SIGTERM)
    outcome(f"status={result.status}, returncode={result.returncode}; the parent received nothing")


# ---------------------------------------------------------------------------------------------
# native code


@pytest.mark.parametrize(
    "code",
    [
        "import ctypes\nctypes.CDLL(None).kill(__import__('os').getppid(), 15)",
        "import _ctypes",
        "import importlib\nimportlib.import_module('ctypes.util')",
        "import importlib.util as u\nu.module_from_spec(u.find_spec('_ctypes'))",
        "import sys\nassert not [m for m in sys.modules if 'ctypes' in m], 'the prelude left ctypes'\nimport ctypes",
    ],
    ids=["ctypes-kill", "_ctypes", "import_module", "module_from_spec", "leftover-from-the-prelude"],
)
def test_ctypes(contained, outcome, code):
    """ctypes: loading native code"""
    result = contained(code)
    assert result.status == "error"
    assert "sandbox: native code (ctypes) is blocked" in last_line(result), result.stderr[-300:]
    outcome(f"status={result.status}; {last_line(result)}")
