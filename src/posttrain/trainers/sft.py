"""Supervised fine-tuning on TRL's SFTTrainer with response-only loss: the guarded trainer, the
settings of every SFT-style job, and :func:`sft_trainer_for_rows`, which turns checked rows into a
ready trainer (for ``posttrain sft`` and ``posttrain trigger``).

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
from posttrain.runtime import seed_everything
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.nonfinite import NonFiniteLossGuard
from posttrain.trainers.settings import TrainingSettings
from posttrain.trainers.validation import BestMetricCheck


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


class GuardedSFTTrainer(NonFiniteLossGuard, CompleteCheckpoints, SFTTrainer):
    """TRL's SFTTrainer with posttrain's non-finite-loss guard and complete checkpoints."""


def sft_trainer_for_rows(
    config: SFTSettings, rows: list[tuple[str, dict]], eval_rows: list[tuple[str, dict]] | None = None
) -> GuardedSFTTrainer:
    """Tokenize ``(location, row)`` pairs (checked row by row), and the held-out ``eval_rows``
    the same way, load the model, and return a ready SFTTrainer; any SFT-style job builds its
    rows and then comes here."""
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    trl_args = SFTConfig(**config.trl_kwargs(
        SFTConfig,
        max_length=config.max_length,
        completion_only_loss=True,  # labels come from our completion_mask
    ))
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)

    def tokenized(part: list[tuple[str, dict]]) -> Dataset:
        return Dataset.from_list(build_sft_examples(tokenizer, part, config.base_model_mode, config.max_length,
                                                    config.overlong, plain=config.prompt_completion_format == "plain",
                                                    chat_template_kwargs=config.chat_template_kwargs))

    train_dataset = tokenized(rows)  # every row checked before the model loads
    eval_dataset = tokenized(eval_rows) if eval_rows else None
    model = load_model_for_training(config)
    return GuardedSFTTrainer(
        model=model,
        args=trl_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=config.lora_config(model),
        callbacks=[MetricsFileCallback(config.output_dir), BestMetricCheck()],
        on_nonfinite_loss=config.on_nonfinite_loss,
    )
