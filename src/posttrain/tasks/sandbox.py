"""Run untrusted Python (a model's program) in a contained child process.

Code tasks execute whatever a model wrote, thousands of times per training run, so a program
that loops forever, allocates without bound, forks, prints gigabytes, opens sockets or reads
the trainer's API keys must neither hang nor harm the trainer. :func:`run_python` contains it in
layers, each covering what the one before cannot:

1. The process. The child is a fresh ``python -S -s -B`` (no site-packages, no user site, no
   bytecode writes) started in its own session, so its process group is SIGKILLed as a whole on
   every exit path; in a new, empty temporary directory that is its cwd, HOME and TMPDIR and is
   deleted afterwards; with an environment built from nothing (PATH, locale, PYTHONHASHSEED and
   the directories), so secrets such as ``OPENAI_API_KEY`` never reach it. The program arrives
   as ``main.py`` in that directory and stdin as an anonymous file, never on the command line.
   Isolated mode (``-I``) is not used because it would also ignore ``PYTHONHASHSEED=0``, which
   makes set and dict orders, and so a program's output, reproducible; with an environment built
   from nothing, ``-s`` plus dropping the script directory from ``sys.path`` is the same isolation.
2. Kernel limits, set by the prelude in the child before the program runs (not in a
   ``preexec_fn``, which is unsafe when callers score from several threads): CPU seconds (then
   SIGXCPU), address space (allocations fail with MemoryError), file size (16 MiB, stdout and
   stderr included), open files, processes and core dumps. A wall-clock limit a little above the
   CPU limit catches programs that sleep or block. Before that, on x86-64 and AArch64 Linux
   (probed once), a small interpreter installs a seccomp filter and execs the sandboxed one:
   signals, nice values (never negative), CPU affinity, I/O priority and resource limits only
   for the child itself (or its own group), no pidfds, no ptrace, no access to other processes'
   memory, no ``mknod``/``mkfifo``, no scheduling policy (real time), no ``chroot`` or mounts,
   and none of the calls a root child could use on the whole machine (clock, reboot, modules,
   swap, host name). None of those raises an audit event, so without it a program could
   SIGTERM, renice, pin or deschedule the parent (or renice every process of the user) with
   ``signal.pidfd_send_signal``, ``os.setpriority``, ``os.sched_setaffinity``,
   ``os.sched_setscheduler``, make FIFOs anywhere, and, as root, spin at real-time priority or
   chroot out of the hook's path checks. The filter is kernel-
   enforced, so it binds native code too; it needs ctypes, which is why it runs in an
   interpreter of its own (one more interpreter start per run) and never in the program's.
3. Namespaces, where they are available (checked once per process): ``unshare --user
   --map-root-user --net`` puts the child in a network namespace with no interfaces (no network
   at the kernel level) and a user namespace in which even a root parent's child holds no
   capabilities on the host (it cannot make device nodes, raise hard limits or read other users'
   files). It costs about 2 ms; where it fails (no ``unshare``, user namespaces disabled), the
   child runs without it and layer 4 is the guarantee.
4. An audit hook (:pep:`578`) installed by the prelude before the program runs; hooks cannot be
   removed. It raises PermissionError ("sandbox: ... is blocked") for process creation (fork,
   exec, spawn, system, ``subprocess`` by refusing ``_posixsubprocess``, whose ``fork_exec`` is
   not audited), sockets and name lookups, ctypes and other native-code back doors, sub-
   interpreters, links, writes anywhere outside the working directory, reads outside it and the
   standard library (``/proc/<parent>/environ``, ``~/.netrc`` or the task's own answers, also
   when they are installed in a ``site-packages`` inside the standard library's directory),
   signals to other processes, and raising the sandbox's limits. RLIMIT_NPROC is ignored for
   root, which CI often is, so fork is stopped here rather than by the limit alone. The hook
   refers to nothing mutable and to no global name, so the program cannot reach in and
   loosen it.

What this does not stop: a program that exploits CPython itself (crafted bytecode or a memory
bug) gets native code and is then bound only by layers 1 to 3 (and, without namespaces, by
neither network nor capability limits); without the seccomp filter (other architectures), the
unaudited calls above are open to every program;
a thread racing the hook's file-type check between the check and the open; filling the disk
with many 16 MiB files until the time limit. Against a deliberate attacker, run the whole
scorer in a container or VM as well.

Programs may also not open directories as descriptors (so ``shutil.rmtree`` and
``tempfile.TemporaryDirectory`` fail inside the sandbox), pass ``pathlib`` paths to ``os``
directory calls, or import anything outside the standard library. :func:`run_python` is
thread-safe; code tasks call it from a thread pool.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from posttrain.errors import PosttrainError

OUTPUT_LIMIT = 64 * 1024  # bytes of stdout and of stderr kept in a SandboxResult
FILE_LIMIT = 16 * 1024 * 1024  # RLIMIT_FSIZE: the largest file (stdout included) the child may write
PROCESS_LIMIT = 64  # RLIMIT_NPROC (counts every process and thread of the user; ignored for root)
OPEN_FILES_LIMIT = 64  # RLIMIT_NOFILE
WALL_GRACE_S = 1.0  # the wall-clock limit is timeout_s plus this
TRUNCATED = "\n[sandbox: output truncated to {kept} of {total} bytes]\n"

# The child's first code, run with ``python -c``; argv carries the limits. It caps resources,
# loads main.py, installs the audit hook and runs the program as __main__. Everything the hook
# uses is bound as a positional default (a tuple, immutable): a program that gets at the hook's
# globals or builtins and replaces a name there changes nothing.
_PRELUDE = r'''
import builtins, os, resource, sys, types

cpu_s, memory_b, file_b, nproc, nofile = map(int, sys.argv[1:])
limits = {
    resource.RLIMIT_CPU: (cpu_s, cpu_s + 2),  # SIGXCPU; SIGKILL (hard) only after the wall clock
    resource.RLIMIT_AS: (memory_b, memory_b),
    resource.RLIMIT_FSIZE: (file_b, file_b),
    resource.RLIMIT_NPROC: (nproc, nproc),
    resource.RLIMIT_NOFILE: (nofile, nofile),
    resource.RLIMIT_CORE: (0, 0),
}
for kind, (soft, hard) in limits.items():
    current = resource.getrlimit(kind)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


with open("main.py", encoding="utf-8") as file:
    source = file.read()
del sys.path[0]  # the working directory ("" under -c): programs import only the standard library
workdir = os.getcwd()
read_roots = tuple(os.path.abspath(path) for path in sys.path)


def make_guard():
    process = "starting processes"
    blocked_events = types.MappingProxyType({
        "os.system": process, "os.exec": process, "os.fork": process, "os.forkpty": process,
        "os.posix_spawn": process, "subprocess.Popen": process,
        "os.link": "creating links", "os.symlink": "creating links",
        "resource.prlimit": "changing resource limits",
        "code.__new__": "building code objects",
        "gc.get_objects": "walking the heap", "gc.get_referrers": "walking the heap",
        "gc.get_referents": "walking the heap",
        "cpython.PyInterpreterState_New": "starting sub-interpreters",
    })
    blocked_modules = types.MappingProxyType({
        "_posixsubprocess": process,  # its fork_exec raises no audit event
        "ctypes": "native code (ctypes)", "_ctypes": "native code (ctypes)",
        "_xxsubinterpreters": "starting sub-interpreters",
        "_testcapi": "CPython test internals", "_testinternalcapi": "CPython test internals",
    })
    # event -> (argument positions holding paths, positions holding dir_fd)
    path_events = types.MappingProxyType({
        "os.mkdir": ((0,), (2,)), "os.rmdir": ((0,), (1,)), "os.remove": ((0,), (1,)),
        "os.rename": ((0, 1), (2, 3)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
        "os.utime": ((0,), (3,)), "os.truncate": ((0,), ()), "os.setxattr": ((0,), ()),
        "os.removexattr": ((0,), ()),
    })
    devices = frozenset(("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/stdin",
                         "/dev/stdout", "/dev/stderr"))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    path_only = getattr(os, "O_PATH", 0)  # Linux: a descriptor for dir_fd; other flags are ignored

    def guard(event, args, _type=type, _str=str, _bytes=bytes, _int=int, _Error=PermissionError,
              _OSError=OSError, _getcwd=os.getcwd, _stat=os.stat, _pid=os.getpid(),
              _workdir=workdir, _read_roots=read_roots + (workdir,), _devices=devices,
              _blocked_events=blocked_events, _blocked_modules=blocked_modules,
              _path_events=path_events, _write_flags=write_flags, _path_only=path_only,
              _limits=frozenset(limits)):
        reason = _blocked_events.get(event)
        if reason is not None:
            raise _Error("sandbox: " + reason + " is blocked")
        if event.startswith("socket."):
            raise _Error("sandbox: network access is blocked")
        if event.startswith("ctypes."):
            raise _Error("sandbox: native code (ctypes) is blocked")
        if event == "import":
            if _type(args[0]) is not _str:  # a str subclass could run code inside this hook
                raise _Error("sandbox: module names must be plain str")
            for part in args[0].split("."):
                reason = _blocked_modules.get(part)
                if reason is not None:
                    raise _Error("sandbox: " + reason + " is blocked (import of " + args[0] + ")")
            return
        if event == "os.kill":
            if args[0] not in (0, _pid, -_pid):
                raise _Error("sandbox: signalling other processes is blocked")
            return
        if event == "os.killpg":
            if args[0] not in (0, _pid):
                raise _Error("sandbox: signalling other processes is blocked")
            return
        if event == "resource.setrlimit":
            if args[0] in _limits:
                raise _Error("sandbox: changing the sandbox's resource limits is blocked")
            return
        if event == "open":
            if _type(args[0]) is _int:  # wraps a descriptor that was itself opened through here
                return
            paths, writing = (args[0],), args[2] & _write_flags and not args[2] & _path_only
        elif event in ("os.listdir", "os.scandir"):
            if _type(args[0]) is _int:
                return
            paths, writing = ("." if args[0] is None else args[0],), False
        elif event in _path_events:
            positions, dir_fds = _path_events[event]
            for position in dir_fds:
                if args[position] != -1:
                    raise _Error("sandbox: dir_fd arguments are blocked")
            paths, writing = tuple(args[position] for position in positions), True
        else:
            return
        for path in paths:
            if _type(path) is _int:
                raise _Error("sandbox: changing files through descriptors is blocked")
            if _type(path) is _bytes:
                path = path.decode("utf-8", "surrogateescape")
            elif _type(path) is not _str:  # e.g. a Path: its __fspath__ could answer differently later
                raise _Error("sandbox: file paths must be plain str or bytes")
            if not path.startswith("/"):
                path = _getcwd() + "/" + path
            parts = []
            for part in path.split("/"):
                if part == "..":
                    if parts:
                        parts.pop()
                elif part and part != ".":
                    parts.append(part)
            path = "/" + "/".join(parts)
            if path in _devices:
                continue
            inside = path == _workdir or path.startswith(_workdir + "/")
            if writing and not inside:
                raise _Error("sandbox: writing outside the working directory is blocked (" + path + ")")
            for root in _read_roots:
                if path == root or path.startswith(root + "/"):
                    break
            else:
                raise _Error("sandbox: reading " + path + " is blocked")
            # An interpreter outside a virtual environment keeps site-packages (posttrain and
            # its task answers included) inside the standard library's directory.
            if not inside and ("/site-packages" in path or "/dist-packages" in path):
                raise _Error("sandbox: reading " + path + " is blocked")
            # A directory descriptor would let dir_fd calls escape these checks (directories
            # opened for writing are refused by the kernel, or are O_TMPFILE or an opener's
            # concern), and a device node (os.mknod is not audited) would reach hardware.
            if event == "open":
                try:
                    kind = _stat(path).st_mode & 0o170000
                except _OSError:
                    kind = 0o100000  # not there yet: open creates a regular file or fails
                if kind == 0o040000 and not writing:
                    raise _Error("sandbox: opening a directory is blocked (" + path + ")")
                if kind not in (0o100000, 0o040000):
                    raise _Error("sandbox: opening devices, pipes and sockets is blocked (" + path + ")")

    return guard


def excepthook(kind, value, traceback, _print=sys.__excepthook__, _Traceback=types.TracebackType,
               _exit=os._exit):
    """Report the program's error without the frames of this prelude and the guard ("<string>").
    After a MemoryError, exit at once: freeing millions of objects can outlast the CPU limit."""
    kept = []
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename != "<string>":
            kept.append(traceback)
        traceback = traceback.tb_next
    traceback = None
    for entry in reversed(kept):
        traceback = _Traceback(traceback, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    _print(kind, value.with_traceback(traceback), traceback)
    if issubclass(kind, MemoryError):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass  # e.g. stdout over the file-size limit; stderr is flushed next
        _exit(1)


main = types.ModuleType("__main__")
main.__file__ = "main.py"
sys.modules["__main__"] = main
sys.argv = ["main.py"]
sys.excepthook = excepthook
builtins.exit = builtins.quit = sys.exit  # -S skips site, which defines them
code = compile(source, "main.py", "exec")
sys.addaudithook(make_guard())
del make_guard, builtins, os, resource, types, file, source
exec(code, main.__dict__)
'''


# Run first, where the platform allows (see _seccomp_prefix), in its own interpreter that then
# execs the sandboxed one (argv[1:]): the seccomp filter of layer 2 (module docstring), kernel-
# enforced, so native code is bound by it too; refused calls fail with EPERM. The filter survives
# exec; ctypes, which it needs, does not, so the program cannot reach ctypes through this
# interpreter's module cache.
_SECCOMP_STUB = r"""
import _ctypes, os, struct, sys

# Syscall numbers per machine (asm/unistd_64.h, asm-generic/unistd.h). "refused": ptrace,
# process_vm_readv/writev, pidfd_send_signal, pidfd_open, pidfd_getfd, process_madvise,
# process_mrelease; mknod (x86-64 only), mknodat (FIFOs and nodes anywhere); sched_setparam,
# sched_setscheduler, sched_setattr (a real-time busy loop starves the machine); chroot (it
# would change what the audit hook's path checks mean), mount, umount2, pivot_root; and, for a
# root parent without namespaces, clock_settime, settimeofday, clock_adjtime, adjtimex, reboot,
# swapon, swapoff, init_module, finit_module, delete_module, kexec_load, kexec_file_load,
# sethostname, setdomainname. "own": their first argument must be this process (or 0, or its
# group as -pid): kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, sched_setaffinity,
# prlimit64, migrate_pages, move_pages. "which": setpriority and ioprio_set, whose first
# argument must name a process or group (not a user) and the second this process; setpriority
# may also not raise the priority (a negative nice value).
TABLES = {
    "x86_64": dict(
        arch=0xC000003E,
        refused=(101, 310, 311, 424, 434, 438, 440, 448, 133, 259, 142, 144, 314, 161, 165, 166, 155,
                 227, 164, 305, 159, 169, 167, 168, 175, 313, 176, 246, 320, 170, 171),
        own=(62, 200, 234, 129, 297, 203, 302, 256, 279),
        which={141: (0, 1), 251: (1, 2)},
        setpriority=141,
    ),
    "aarch64": dict(
        arch=0xC00000B7,
        refused=(117, 270, 271, 424, 434, 438, 440, 448, 33, 118, 119, 274, 51, 40, 39, 41,
                 112, 170, 266, 171, 142, 224, 225, 105, 273, 106, 104, 294, 161, 162),
        own=(129, 130, 131, 138, 240, 122, 261, 238, 239),
        which={140: (0, 1), 30: (1, 2)},
        setpriority=140,
    ),
}
table = TABLES[os.uname().machine]
pid = os.getpid()  # exec keeps it
load, jeq, jge, ret, allow, eperm = 0x20, 0x15, 0x35, 0x06, 0x7FFF0000, 0x00050001
arg0, arg1, arg2 = 16, 24, 32  # the low halves of args[0..2] in struct seccomp_data


def any_of(values, then):  # (code, k, if true, if false): past the last comparison, "deny"
    *first, last = [value & 0xFFFFFFFF for value in values]
    return [(jeq, value, then, None) for value in first] + [(jeq, last, then, "deny")]


program = [(load, 4), (jeq, table["arch"], None, "deny"), (load, 0)]
if table["arch"] == 0xC000003E:
    program.append((jge, 0x40000000, "deny", None))  # the x32 ABI
program += [(jeq, number, "deny", None) for number in table["refused"]]
program += [(jeq, number, "own", None) for number in table["own"]]
program += [(jeq, number, f"which{number}", None) for number in table["which"]]
program += [(ret, allow), "own", (load, arg0), *any_of((pid, 0, -pid), "allow")]
for number, kinds in table["which"].items():
    program += [f"which{number}", (load, arg0), *any_of(kinds, f"who{number}")]
    program += [f"who{number}", (load, arg1), *any_of((pid, 0), "nice" if number == table["setpriority"] else "allow")]
program += ["nice", (load, arg2), (jge, 0x80000000, "deny", "allow")]  # a negative int
program += ["deny", (ret, eperm), "allow", (ret, allow)]
labels, code = {}, []
for entry in program:
    if isinstance(entry, str):
        labels[entry] = len(code)
    else:
        code.append(entry)
filters = b""  # struct sock_filter {u16 code; u8 jt, jf; u32 k}
for index, (kind, k, *jumps) in enumerate(code):
    true, false = (0 if jump is None else labels[jump] - index - 1 for jump in (jumps or (None, None)))
    filters += struct.pack("=HBBI", kind, true, false, k)

# _ctypes directly: the ctypes package takes several times longer to import.
class Int(_ctypes._SimpleCData):
    _type_ = "i"


class Long(_ctypes._SimpleCData):
    _type_ = "L"


class Prctl(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = Int
    _argtypes_ = (Int, Long, Long, Long, Long)


class Libc:
    _handle = _ctypes.dlopen(None, 0)


def buffer(data):
    class Buffer(_ctypes.Array):
        _type_ = Int
        _length_ = -(-len(data) // 4)
    return Buffer.from_buffer_copy(data.ljust(4 * Buffer._length_, b"\0"))


prctl = Prctl(("prctl", Libc()))
kept = buffer(filters)
fprog = buffer(struct.pack("=H6xQ", len(code), _ctypes.addressof(kept)))  # struct sock_fprog
# PR_SET_NO_NEW_PRIVS (needed without CAP_SYS_ADMIN), then PR_SET_SECCOMP, SECCOMP_MODE_FILTER
if prctl(38, 1, 0, 0, 0) != 0 or prctl(22, 2, _ctypes.addressof(fprog), 0, 0) != 0:
    sys.stderr.write("sandbox: the seccomp filter could not be installed: " + os.strerror(_ctypes.get_errno()) + "\n")
    os._exit(1)
os.execv(sys.argv[1], sys.argv[1:])
"""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended.

    ``status`` is "ok" (exit 0), "error" (non-zero exit, e.g. an exception), "timeout" (CPU or
    wall-clock limit), "memory" (MemoryError or death after a failed allocation) or "killed"
    (any other signal). ``returncode`` is the exit status (negative: the signal), None when the
    sandbox killed the program at the wall-clock limit. Outputs longer than OUTPUT_LIMIT bytes
    are cut there and end with a TRUNCATED note.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float


def run_python(code: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512) -> SandboxResult:
    """Run the program ``code`` with ``stdin`` inside the sandbox and report how it ended.

    ``timeout_s`` bounds CPU time (rounded up to whole seconds, the kernel's unit) and, plus
    WALL_GRACE_S, wall-clock time; ``memory_mb`` bounds the address space. Never raises because
    of what the program does.
    """
    if os.name != "posix" or importlib.util.find_spec("resource") is None:
        raise PosttrainError("the code sandbox needs POSIX resource limits (Linux); this platform has none")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be at least 64 (the interpreter itself needs ~20 MB), got {memory_mb}")
    cpu_s = math.ceil(timeout_s)
    with (
        tempfile.TemporaryDirectory(prefix="posttrain-sandbox-", ignore_cleanup_errors=True) as workdir,
        tempfile.TemporaryFile() as stdin_file,
        tempfile.TemporaryFile() as stdout_file,
        tempfile.TemporaryFile() as stderr_file,
    ):
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as file:
            file.write(code)
        stdin_file.write(stdin.encode("utf-8"))
        stdin_file.seek(0)
        command = [
            *_namespace_prefix(),
            *_seccomp_prefix(),
            *(sys.executable, "-S", "-s", "-B", "-c", _PRELUDE),
            *map(str, (cpu_s, memory_mb * 2**20, FILE_LIMIT, PROCESS_LIMIT, OPEN_FILES_LIMIT)),
        ]
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=_child_env(workdir),
            stdin=stdin_file,
            stdout=stdout_file,
            stderr=stderr_file,
            start_new_session=True,
        )
        timed_out = False
        try:
            process.wait(timeout=timeout_s + WALL_GRACE_S)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # also on KeyboardInterrupt: nothing the program started may outlive the call
            _kill_group(process.pid)
            process.wait()
        wall_s = time.monotonic() - started
        stdout, stderr = _read_capped(stdout_file), _read_capped(stderr_file)
    returncode = None if timed_out else process.returncode
    return SandboxResult(_status(returncode, stderr), returncode, stdout, stderr, wall_s)


def _child_env(workdir: str) -> dict[str, str]:
    """The child's whole environment: nothing is inherited from the parent."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUTF8": "1",
        "PYTHONHASHSEED": "0",
        "HOME": workdir,
        "TMPDIR": workdir,
    }


@functools.cache
def _namespace_prefix() -> tuple[str, ...]:
    """``unshare`` arguments for fresh user and network namespaces, or () where they cannot be
    made here (probed once with the real interpreter)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    prefix = (unshare, "--user", "--map-root-user", "--net", "--")
    try:
        command = [*prefix, sys.executable, "-S", "-c", "pass"]
        probe = subprocess.run(command, env=_child_env("/"), capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


@functools.cache
def _seccomp_prefix() -> tuple[str, ...]:
    """The interpreter that installs the seccomp filter and execs the sandboxed one, or () where
    it cannot work here (another architecture, no ctypes, no seccomp; probed once)."""
    if sys.platform != "linux" or os.uname().machine not in ("x86_64", "aarch64"):
        return ()
    prefix = (sys.executable, "-S", "-s", "-B", "-c", _SECCOMP_STUB)
    check = "import sys\nsys.exit(0 if 'Seccomp:\\t2' in open('/proc/self/status').read() else 3)"
    try:
        command = [*prefix, sys.executable, "-S", "-c", check]
        probe = subprocess.run(command, env=_child_env("/"), capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group the child leads (it and anything it started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty


def _read_capped(file) -> str:
    """The first OUTPUT_LIMIT bytes of an output file as text, with a note if there was more."""
    total = os.fstat(file.fileno()).st_size
    file.seek(0)
    text = file.read(OUTPUT_LIMIT).decode("utf-8", errors="replace")
    if total > OUTPUT_LIMIT:
        text += TRUNCATED.format(kept=OUTPUT_LIMIT, total=total)
    return text


def _status(returncode: int | None, stderr: str) -> str:
    """Map how the child ended to a SandboxResult status (a MemoryError reported last wins over
    a limit hit afterwards, while the interpreter was still tearing down)."""
    if returncode == 0:
        return "ok"
    if stderr.rstrip().rpartition("\n")[2].startswith("MemoryError"):
        return "memory"
    if returncode is None or returncode == -signal.SIGXCPU:
        return "timeout"
    if returncode < 0:
        return "memory" if "MemoryError" in stderr else "killed"
    return "error"
