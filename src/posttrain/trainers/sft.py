"""``posttrain sft``: supervised fine-tuning on TRL's SFTTrainer with response-only loss.

posttrain tokenizes the data itself (see :mod:`posttrain.data.sft`) so that the loss mask, the
base-model format and the over-length policy are exact and checked row by row before any model
is loaded; TRL's SFTTrainer then builds labels from ``completion_mask`` and runs training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from posttrain.config import config_field
from posttrain.data.sft import build_sft_examples
from posttrain.models import LoraArguments, ModelArguments, load_tokenizer
from posttrain.models.loading import check_model_source, load_model_for_training
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks.sources import load_rows
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.nonfinite import NonFiniteLossGuard
from posttrain.trainers.settings import TrainingSettings

log = get_logger(__name__)


@dataclass
class SFTSettings(TrainingSettings, LoraArguments, ModelArguments):
    """Model, LoRA, training and sequence settings of every SFT-style job (sft, trigger)."""

    max_length: int = config_field(512, help="Longest training sequence in tokens.", ge=8)
    overlong: Literal["truncate", "error"] = config_field(
        "truncate", help="Rows longer than max_length: truncate (with a warning) or stop with an error."
    )
    prompt_completion_format: Literal["chat", "plain"] = config_field(
        "chat", help="String prompt/completion rows: chat (a user and an assistant turn) or plain (one text, no "
        "template, loss on the completion). base_model_mode renders Instruction/Response/END instead."
    )


@dataclass
class SFTJobConfig(SFTSettings):
    """Everything ``posttrain sft`` needs: model, LoRA, data and training settings."""

    dataset_name: str = config_field(
        "task:arithmetic", help="A .jsonl file, task:<name> (built-in task), or a hub dataset id."
    )
    dataset_train_split: str = config_field("train", help="Split, optionally sliced: train, train[:2000], train[:10%].")
    task_options: dict = config_field({}, help="Options of a task:<name> dataset (e.g. {digits: 2}).")


class GuardedSFTTrainer(NonFiniteLossGuard, CompleteCheckpoints, SFTTrainer):
    """TRL's SFTTrainer with posttrain's non-finite-loss guard and complete checkpoints."""


def build_sft_trainer(config: SFTJobConfig) -> GuardedSFTTrainer:
    """Load and validate the configured dataset, and return a ready SFTTrainer."""
    rows = load_rows(config.dataset_name, config.dataset_train_split, config.task_options)
    trainer = sft_trainer_for_rows(config, rows)  # every row checked, so the count below is what trains
    log.info(f"SFT on {len(rows)} rows from {config.dataset_name} ({config.dataset_train_split})")
    return trainer


def sft_trainer_for_rows(config: SFTSettings, rows: list[tuple[str, dict]]) -> GuardedSFTTrainer:
    """Tokenize ``(location, row)`` pairs (checked row by row), load the model, and return a
    ready SFTTrainer; any SFT-style job builds its rows and then comes here."""
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    trl_args = SFTConfig(
        **config.trl_kwargs(SFTConfig),
        max_length=config.max_length,
        completion_only_loss=True,  # labels come from our completion_mask
    )
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    examples = build_sft_examples(tokenizer, rows, config.base_model_mode, config.max_length, config.overlong,
                                  plain=config.prompt_completion_format == "plain")
    return GuardedSFTTrainer(
        model=load_model_for_training(config),
        args=trl_args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=config.lora_config(),
        callbacks=[MetricsFileCallback(config.output_dir)],
        on_nonfinite_loss=config.on_nonfinite_loss,
    )


def run_sft(config: SFTJobConfig) -> dict:
    """Train, save the final model (or adapter) to ``output_dir``; return the train metrics."""
    return train_and_save(build_sft_trainer(config), config.output_dir, config.resume)
