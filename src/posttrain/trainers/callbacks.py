"""Trainer callbacks shared by posttrain's trainers."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from posttrain.data.jsonl import append_jsonl, iter_jsonl, write_jsonl


class MetricsFileCallback(TrainerCallback):
    """Append every logged metrics dict (with its step) to ``<output_dir>/metrics.jsonl``.

    Reports and pipeline manifests read this file; only the main process writes it. When
    training starts (or resumes from a checkpoint), rows logged after that step by an earlier,
    interrupted run are dropped, so each step appears once.
    """

    def __init__(self, output_dir: str):
        self.path = Path(output_dir) / "metrics.jsonl"

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.exists():
            rows = [row for _, row in iter_jsonl(self.path, allow_torn_tail=True)]
            write_jsonl(self.path, [row for row in rows if row.get("step", 0) <= state.global_step])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, [{"step": state.global_step, "epoch": state.epoch, **logs}])
