"""The end of every posttrain training command: resume if asked, train, save."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from posttrain.runtime import get_logger

log = get_logger(__name__)


def train_and_save(
    trainer: Trainer,
    output_dir: str,
    resume: bool,
    on_resume: Callable[[str], None] | None = None,
    save_to: str | None = None,
) -> dict:
    """Train (from the last checkpoint in ``output_dir`` when ``resume``), save the final model
    or adapter and the tokenizer to ``save_to`` (default ``output_dir``), and return the train
    metrics.

    ``on_resume(checkpoint)`` restores state the Trainer does not know about (a β schedule, a
    teacher) before training continues.
    """
    last = get_last_checkpoint(output_dir) if resume and Path(output_dir).is_dir() else None
    if last:
        log.info(f"resuming from {last}")
        if on_resume is not None:
            on_resume(last)
    result = trainer.train(resume_from_checkpoint=last)
    save_to = save_to or output_dir
    trainer.save_model(save_to)
    trainer.processing_class.save_pretrained(save_to)
    log.info(f"saved the final model to {save_to}")
    return {"train_loss": result.training_loss, "global_step": result.global_step, **result.metrics}
