"""Trainer callbacks shared by posttrain's trainers."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from posttrain.data.jsonl import append_jsonl


class MetricsFileCallback(TrainerCallback):
    """Append every logged metrics dict (with its step) to ``<output_dir>/metrics.jsonl``.

    Reports and pipeline manifests read this file; only the main process writes it.
    """

    def __init__(self, output_dir: str):
        self.path = Path(output_dir) / "metrics.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, [{"step": state.global_step, "epoch": state.epoch, **logs}])
