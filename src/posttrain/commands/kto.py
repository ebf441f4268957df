"""``posttrain kto``: KTO on TRL's KTOTrainer, from completions labelled desirable or undesirable.

The rows (``prompt``/``completion``/``label``, or prompt/chosen/rejected pairs split into a
desirable and an undesirable row) are checked and normalised before any model is loaded
(:func:`posttrain.data.preference.normalize_unpaired`), and train on
:class:`posttrain.trainers.kto.GuardedKTOTrainer`; TRL computes the loss (formulas there), with
a constant β.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datasets import Dataset
from trl import KTOConfig

from posttrain.config import config_field
from posttrain.data.chat import with_template_arguments
from posttrain.data.preference import PreferenceDataArguments, normalize_unpaired
from posttrain.errors import ConfigError
from posttrain.models import LoraArguments, ModelArguments, load_tokenizer
from posttrain.models.loading import check_model_source, load_model, load_model_for_training
from posttrain.runtime import get_logger, seed_everything
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.kto import GuardedKTOTrainer
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.validation import BestMetricCheck, ValidationSettings

log = get_logger(__name__)


@dataclass
class KTOJobConfig(PreferenceDataArguments, ValidationSettings, LoraArguments, ModelArguments):
    """Everything ``posttrain kto`` needs."""

    dataset_name: str = config_field(
        "", help="Rows of prompt/completion/label (true: desirable), or pairs (prompt/chosen/rejected, HH-RLHF) split "
        "into a desirable and an undesirable row: a .jsonl file, task:<name> (its verifier-built pairs) or a hub dataset id."
    )
    max_length: int = config_field(512, help="Longest prompt + completion in tokens (TRL truncates beyond).", ge=8)
    loss_type: Literal["kto", "apo_zero_unpaired"] = config_field(
        "kto", help="kto (Ethayarajh et al. 2024, against a KL reference point) or apo_zero_unpaired (APO-zero on unpaired rows)."
    )
    beta: float = config_field(0.1, help="β, constant: how far the policy may move from the reference.", gt=0)
    desirable_weight: float = config_field(
        1.0, help="λ_D, weight of the desirable rows' loss (the KTO paper keeps λ_D·n_D / (λ_U·n_U) in [1, 4/3]).", gt=0
    )
    undesirable_weight: float = config_field(1.0, help="λ_U, weight of the undesirable rows' loss.", gt=0)
    ref_model_name_or_path: str | None = config_field(
        None, help="A separate reference model (default: the initial policy; the adapter-disabled base under LoRA)."
    )
    precompute_ref_log_probs: bool = config_field(False, help="Compute reference log-probs once before training (no reference model in memory).")

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type == "kto" and self.per_device_train_batch_size < 2:
            raise ConfigError(
                "config key 'per_device_train_batch_size' must be >= 2 for loss_type kto: its KL reference point "
                "pairs each prompt with another row's completion of the same batch"
            )


def build_kto_trainer(config: KTOJobConfig) -> GuardedKTOTrainer:
    """Validate, load and normalise the rows, load the models, return a ready trainer."""
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    if config.ref_model_name_or_path:
        check_model_source(config.ref_model_name_or_path)
    if not (config.dataset_name or config.dataset_mixture):
        raise ConfigError("config key 'dataset_name' is empty: give a .jsonl file of labelled completions or pairs, "
                          "or a hub dataset id (or a dataset_mixture)")
    trl_args = KTOConfig(**config.trl_kwargs(
        KTOConfig,
        loss_type=config.loss_type,
        beta=config.beta,
        desirable_weight=config.desirable_weight,
        undesirable_weight=config.undesirable_weight,
        max_length=config.max_length,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
    ))
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    rows, eval_rows = config.training_rows(preference=True)
    examples = with_template_arguments(normalize_unpaired(rows, config.base_model_mode, config.hh_format),
                                       config.chat_template_kwargs)
    eval_examples = (with_template_arguments(normalize_unpaired(eval_rows, config.base_model_mode, config.hh_format),
                                             config.chat_template_kwargs) if eval_rows else None)
    desirable = sum(example["label"] for example in examples)
    log.info(f"KTO ({config.loss_type}) on {len(examples)} rows ({desirable} desirable, "
             f"{len(examples) - desirable} undesirable) from {config.dataset_name or 'the dataset_mixture'}")
    ref_model = (
        load_model(config.ref_model_name_or_path, config.dtype, config.trust_remote_code)
        if config.ref_model_name_or_path
        else None
    )
    model = load_model_for_training(config)
    return GuardedKTOTrainer(
        base_model_mode=config.base_model_mode,
        model=model,
        ref_model=ref_model,
        args=trl_args,
        # TRL reads the rows in order (its KL estimate pairs each row with its neighbour's
        # completion), so they are shuffled once here: unpaired pairs would otherwise sit side by side
        train_dataset=Dataset.from_list(examples).shuffle(seed=config.seed),
        eval_dataset=Dataset.from_list(eval_examples).shuffle(seed=config.seed) if eval_examples else None,
        processing_class=tokenizer,
        peft_config=config.lora_config(model),
        callbacks=[MetricsFileCallback(config.output_dir), BestMetricCheck()],
        on_nonfinite_loss=config.on_nonfinite_loss,
    )


def run_kto(config: KTOJobConfig) -> dict:
    """Train; save the final model (or adapter); return the train metrics."""
    return train_and_save(build_kto_trainer(config), config.output_dir, config.resume)
