"""``posttrain sft``: supervised fine-tuning with response-only loss (chat or base format, LoRA).

The rows come from a ``.jsonl`` file, a built-in task, the Hub or a weighted mix of them
(:mod:`posttrain.tasks.sources`), are checked and tokenized row by row (:mod:`posttrain.data.sft`)
before any model is loaded, and train on TRL's SFTTrainer (:mod:`posttrain.trainers.sft`).
"""

from __future__ import annotations

from dataclasses import dataclass

from posttrain.config import config_field
from posttrain.data.mixture import MIXTURE_HELP, check_dataset_keys
from posttrain.runtime import get_logger
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.sft import GuardedSFTTrainer, SFTSettings, sft_trainer_for_rows
from posttrain.trainers.validation import ValidationSettings

log = get_logger(__name__)


@dataclass
class SFTJobConfig(ValidationSettings, SFTSettings):
    """Everything ``posttrain sft`` needs: model, LoRA, data, training and held-out evaluation settings."""

    dataset_name: str = config_field(
        "", help="A .jsonl file, task:<name> (built-in task), or a hub dataset id (task:arithmetic when neither it nor "
        "dataset_mixture is set)."
    )
    dataset_train_split: str = config_field("train", help="Split, optionally sliced: train, train[:2000], train[:10%].")
    task_options: dict = config_field({}, help="Options of a task:<name> dataset (e.g. {digits: 2}).")
    dataset_mixture: list[dict] = config_field([], help=MIXTURE_HELP)

    def __post_init__(self):
        super().__post_init__()
        self.dataset_name = check_dataset_keys(self.dataset_name, self.dataset_train_split, self.dataset_mixture, "task:arithmetic")


def build_sft_trainer(config: SFTJobConfig) -> GuardedSFTTrainer:
    """Load and validate the configured dataset, and return a ready SFTTrainer."""
    rows, eval_rows = config.training_rows()
    trainer = sft_trainer_for_rows(config, rows, eval_rows)  # every row checked, so the counts below are what trains
    source = f"{config.dataset_name} ({config.dataset_train_split})" if config.dataset_name else "the dataset_mixture"
    log.info(f"SFT on {len(rows)} rows from {source}")
    if eval_rows:
        log.info(f"evaluating on {len(eval_rows)} held-out rows every {config.every} steps")
    return trainer


def run_sft(config: SFTJobConfig) -> dict:
    """Train, save the final model (or adapter) to ``output_dir``; return the train metrics."""
    return train_and_save(build_sft_trainer(config), config.output_dir, config.resume)
