"""Stop (or skip the batch) when the training loss is NaN or infinite.

One non-finite loss turns every weight into NaN at the next optimizer step, and training then
carries on, logging ``nan`` and saving NaN checkpoints. The guard checks the loss of every
training micro-batch before its backward pass, agreed across processes (so every rank takes the
same branch and none hangs in a collective), and then:

* ``stop`` (default): saves a checkpoint of the weights as they are, which is the last good state
  because this batch has not been applied, and ends the run with a message saying how to go on;
* ``skip``: replaces the loss by a zero that still touches every trainable parameter (so the
  batch adds exactly zero gradient, and DDP's gradient hooks fire as usual), counts it in the
  ``nonfinite_skipped`` metric and goes on. The optimizer still steps, with whatever the other
  micro-batches of the step contributed; Adam's momentum moves the weights a little even from an
  all-zero gradient.
"""

from __future__ import annotations

from typing import Literal

import torch

from posttrain.errors import PosttrainError
from posttrain.runtime import get_logger

log = get_logger(__name__)

NonFinitePolicy = Literal["stop", "skip"]


class NonFiniteLossError(PosttrainError):
    """Training met a NaN/Inf loss and stopped with the last good state saved."""


class NonFiniteLossGuard:
    """Trainer mixin (put it before the TRL trainer in the bases) guarding ``compute_loss``."""

    def __init__(self, *args, on_nonfinite_loss: NonFinitePolicy = "stop", **kwargs):
        super().__init__(*args, **kwargs)
        self.on_nonfinite_loss = on_nonfinite_loss
        self.nonfinite_skipped = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return result
        loss = result[0] if return_outputs else result
        # one flag per process, summed: every process sees whether any of them went non-finite
        bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
        if self.accelerator.reduce(bad, reduction="sum").item() == 0:
            return result
        if self.on_nonfinite_loss == "stop":
            self._stop_with_last_good_state(loss)
        self.nonfinite_skipped += 1
        log.warning(f"non-finite loss at step {self.state.global_step + 1}: batch skipped ({self.nonfinite_skipped} so far)")
        zero = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
        return (zero, *result[1:]) if return_outputs else zero

    def _stop_with_last_good_state(self, loss: torch.Tensor) -> None:
        step = self.state.global_step  # optimizer steps completed, all with finite losses
        self._save_checkpoint(self.model, trial=None)
        checkpoint = f"{self.args.output_dir}/checkpoint-{step}"
        raise NonFiniteLossError(
            f"non-finite loss ({loss.detach().float().flatten()[0].item()}) in step {step + 1}; the last good state "
            f"(after step {step}) is saved in {checkpoint}. Lower learning_rate or check the data, then rerun with "
            f"--resume true (add --on_nonfinite_loss skip to skip such batches)"
        )

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self.nonfinite_skipped and "loss" in logs:
            logs = {**logs, "nonfinite_skipped": self.nonfinite_skipped}
        super().log(logs, *args, **kwargs)
