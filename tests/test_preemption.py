"""SIGTERM handling: a flag inside a stoppable loop, an exception elsewhere, the old handler back after."""

import os
import signal

import pytest

from posttrain import preemption
from posttrain.cli import _resume_hint
from posttrain.preemption import Preempted, sigterm_stops_cleanly, stop_requested, stop_requested_on_any_process, stoppable_loop


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_inside_a_loop_sigterm_only_sets_the_flag_the_loop_polls():
    with stoppable_loop():
        assert not stop_requested()
        sigterm()
        assert stop_requested() and stop_requested_on_any_process()
        sigterm()  # a second one while the loop stops is ignored too
    assert not stop_requested()  # the handler this loop installed is gone, and its flag with it


def test_outside_a_loop_sigterm_raises_at_once():
    with sigterm_stops_cleanly():
        with pytest.raises(Preempted, match="stopped by SIGTERM"):
            sigterm()


def test_a_flag_set_in_a_loop_outlives_the_loop_under_the_cli_handler():
    """The CLI's handler stays installed: a pipeline sees a SIGTERM that came as a stage ended."""
    with sigterm_stops_cleanly():
        with stoppable_loop():
            sigterm()
        assert stop_requested()
        sigterm()  # already stopping: no second exception while the stop is handled


def test_the_previous_handler_comes_back():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with stoppable_loop():
            pass
        assert signal.getsignal(signal.SIGTERM) is not preemption._on_sigterm
        sigterm()
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_exit_status_is_what_a_shell_reports_for_sigterm():
    assert preemption.EXIT_PREEMPTED == 143


@pytest.mark.parametrize(
    "argv, resume_key, hint",
    [
        (["sft", "--config", "a b.yaml", "--max_steps", "5"], True, "resume with: posttrain sft --config 'a b.yaml' --max_steps 5 --resume true"),
        (["sft", "--resume", "false", "--max_steps", "5"], True, "resume with: posttrain sft --max_steps 5 --resume true"),
        (["rollout", "--output_dir", "x"], False, "resume with: posttrain rollout --output_dir x"),
    ],
)
def test_resume_hint_repeats_the_command_line(argv, resume_key, hint):
    assert _resume_hint(argv, resume_key) == hint
