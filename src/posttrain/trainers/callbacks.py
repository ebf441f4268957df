"""Trainer callbacks shared by posttrain's trainers."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from posttrain.data.jsonl import append_jsonl, iter_jsonl, write_jsonl
from posttrain.preemption import stop_requested_on_any_process


class MetricsFileCallback(TrainerCallback):
    """Append every logged metrics dict (with its step) to ``<output_dir>/metrics.jsonl``.

    Reports and pipeline manifests read this file; only the main process writes it. When
    training starts (or resumes from a checkpoint), rows logged after that step by an earlier,
    interrupted run are dropped (and its end-of-run summary), so each step appears once.
    """

    def __init__(self, output_dir: str):
        self.path = Path(output_dir) / "metrics.jsonl"

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.exists():
            rows = [row for _, row in iter_jsonl(self.path, allow_torn_tail=True)]
            # an interrupted run's summary row ("train_runtime", ...) goes too: this run writes its own
            kept = [row for row in rows if row.get("step", 0) <= state.global_step and "train_runtime" not in row]
            write_jsonl(self.path, kept)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, [{"step": state.global_step, "epoch": state.epoch, **logs}])


class StopOnSigterm(TrainerCallback):
    """Ends training after the optimizer step in which SIGTERM arrived (on any process), with a
    checkpoint at that step (see :mod:`posttrain.preemption`); ``stopped_at`` is that step, or
    None while training runs on."""

    def __init__(self):
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if stop_requested_on_any_process():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control
