"""Helpers for trainer tests."""

import pytest
from transformers import TrainerCallback


class StopAfterCheckpoint(TrainerCallback):
    """Simulate an interruption right after the checkpoint of a given step is written."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.fixture
def stop_after_checkpoint():
    return StopAfterCheckpoint
