"""One `posttrain run` per output root: a second is refused; a dead run's lock is no lock."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from posttrain.errors import PosttrainError
from posttrain.pipeline.lock import pipeline_lock

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from posttrain.pipeline.lock import pipeline_lock
    with pipeline_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(600)
""")


def hold_lock(root) -> subprocess.Popen:
    """Another process that takes the lock and keeps it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(PosttrainError) as refused:
            with pipeline_lock(tmp_path):
                pass
        message = str(refused.value)
        assert f"{tmp_path} is in use by another `posttrain run` (pid {holder.pid} on " in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    holder = hold_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)  # no chance to clean up: the lock file stays on disk
    holder.wait()
    assert (tmp_path / ".run.lock").exists()
    with pipeline_lock(tmp_path):
        assert f"pid {os.getpid()} " in (tmp_path / ".run.lock").read_text()


def test_the_lock_is_released_after_the_run(tmp_path):
    with pipeline_lock(tmp_path):
        pass
    with pipeline_lock(tmp_path):  # the same process again, and then another one
        pass
    hold_lock(tmp_path).kill()


def test_each_rank_of_one_launch_locks_its_own_file(tmp_path, monkeypatch):
    with pipeline_lock(tmp_path):
        monkeypatch.setenv("RANK", "1")
        with pipeline_lock(tmp_path):
            assert (tmp_path / ".run.rank1.lock").exists()


def test_posttrain_run_into_a_locked_root_is_one_line_exit_2(tmp_path, capsys):
    from posttrain.cli import main

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: small\nstages:\n  - name: model\n    command: make-model\n")
    holder = hold_lock(tmp_path / "runs" / "small")
    try:
        code = main(["run", str(pipeline), "--output-root", str(tmp_path / "runs")])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"posttrain run: error: {tmp_path / 'runs' / 'small'} is in use by another `posttrain run` (pid {holder.pid} ")
    assert not (tmp_path / "runs" / "small" / "model").exists()  # nothing ran
