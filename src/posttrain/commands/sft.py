"""``posttrain sft``: supervised fine-tuning with response-only loss (chat or base format, LoRA).

The rows come from a ``.jsonl`` file, a built-in task or the Hub (:mod:`posttrain.tasks.sources`),
are checked and tokenized row by row (:mod:`posttrain.data.sft`) before any model is loaded,
and train on TRL's SFTTrainer (:mod:`posttrain.trainers.sft`).
"""

from __future__ import annotations

from dataclasses import dataclass

from posttrain.config import config_field
from posttrain.runtime import get_logger
from posttrain.tasks.sources import load_rows
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.sft import GuardedSFTTrainer, SFTSettings, sft_trainer_for_rows

log = get_logger(__name__)


@dataclass
class SFTJobConfig(SFTSettings):
    """Everything ``posttrain sft`` needs: model, LoRA, data and training settings."""

    dataset_name: str = config_field(
        "task:arithmetic", help="A .jsonl file, task:<name> (built-in task), or a hub dataset id."
    )
    dataset_train_split: str = config_field("train", help="Split, optionally sliced: train, train[:2000], train[:10%].")
    task_options: dict = config_field({}, help="Options of a task:<name> dataset (e.g. {digits: 2}).")


def build_sft_trainer(config: SFTJobConfig) -> GuardedSFTTrainer:
    """Load and validate the configured dataset, and return a ready SFTTrainer."""
    rows = load_rows(config.dataset_name, config.dataset_train_split, config.task_options)
    trainer = sft_trainer_for_rows(config, rows)  # every row checked, so the count below is what trains
    log.info(f"SFT on {len(rows)} rows from {config.dataset_name} ({config.dataset_train_split})")
    return trainer


def run_sft(config: SFTJobConfig) -> dict:
    """Train, save the final model (or adapter) to ``output_dir``; return the train metrics."""
    return train_and_save(build_sft_trainer(config), config.output_dir, config.resume)
