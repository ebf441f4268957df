"""``posttrain dpo``: the DPO family with a dynamic β, on TRL's DPOTrainer.

The config names the loss, the β schedule and the pairs; the pairs (a ``.jsonl`` file, a task's
verifier-built pairs or a hub dataset such as HH-RLHF) are checked and normalised before any
model is loaded, and train on :class:`posttrain.trainers.dpo.ScheduledDPOTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datasets import Dataset
from trl import DPOConfig

from posttrain.config import config_field
from posttrain.data.preference import normalize_pairs
from posttrain.errors import ConfigError
from posttrain.losses import BetaDPOSchedule, ConstantBeta, QuantileBetaSchedule
from posttrain.losses.dpo import DPOLossType
from posttrain.models import LoraArguments, ModelArguments, load_tokenizer
from posttrain.models.loading import check_model_source, load_model, load_model_for_training
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks.sources import load_rows
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.dpo import ScheduledDPOTrainer
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.settings import TrainingSettings

log = get_logger(__name__)


@dataclass
class DPOJobConfig(TrainingSettings, LoraArguments, ModelArguments):
    """Everything ``posttrain dpo`` needs."""

    dataset_name: str = config_field("", help="Pairs: a .jsonl file (prompt/chosen/rejected), task:<name>, or a hub dataset id (e.g. Anthropic/hh-rlhf).")
    dataset_train_split: str = config_field("train", help="Split, optionally sliced: train, train[:1%].")
    task_options: dict = config_field({}, help="Options of a task:<name> dataset (its pairs are built by the task's verifier).")
    hh_format: Literal["messages", "text"] = config_field(
        "messages", help="HH-RLHF transcripts become chat messages, or stay as Human/Assistant text."
    )
    max_length: int = config_field(512, help="Longest prompt + response in tokens (TRL truncates beyond).", ge=8)
    loss_type: DPOLossType = config_field("sigmoid", help="DPO-family loss (a name in posttrain.losses.DPO_LOSSES).")
    label_smoothing: float = config_field(0.0, help="Assumed label-flip rate ε (cDPO for sigmoid, robust DPO).", ge=0.0, le=0.499)
    beta: float = config_field(0.1, help="β (β0 for the dynamic schedules).", gt=0)
    beta_schedule: Literal["constant", "beta_dpo", "quantile"] = config_field("constant", help="How β changes during training.")
    beta_dpo_alpha: float = config_field(0.6, help="β-DPO: α, sensitivity of β to the batch's gap.")
    beta_dpo_momentum: float = config_field(0.9, help="β-DPO: momentum m of the running margin statistics.", ge=0, le=0.999)
    beta_dpo_rho: float = config_field(0.8, help="β-DPO: ρ, fraction of pairs kept per batch, in (0, 1].", gt=0, le=1)
    quantile_delta: float = config_field(0.1, help="Quantile β: δ, target share of margins above τ, in (0, 1).", gt=0, le=0.999)
    quantile_momentum: float = config_field(0.05, help="Quantile β: λ, smoothing of the threshold τ.", gt=0, le=1)
    quantile_alpha: float = config_field(0.005, help="Quantile β: α, log step of β per batch.", ge=0)
    quantile_gamma: float = config_field(2.0, help="Quantile β: γ, gain on the exceedance z-score.", ge=0)
    quantile_beta_min: float = config_field(0.0, help="Quantile β: lower clip.", ge=0)
    quantile_beta_max: float = config_field(2.0, help="Quantile β: upper clip.", gt=0)
    quantile_warmup_steps: int = config_field(120, help="Quantile β: batches at β0 before τ is set.", ge=0)
    rpo_alpha: float = config_field(
        0.0, help="RPO (Pang et al. 2024): weight of the NLL of chosen responses added to the loss (TRL: loss_type [sigmoid, sft]).", ge=0
    )
    ref_model_name_or_path: str | None = config_field(
        None, help="A separate reference model (default: the initial policy; the adapter-disabled base under LoRA)."
    )
    precompute_ref_log_probs: bool = config_field(False, help="Compute reference log-probs once before training (no reference model in memory).")

    def __post_init__(self):
        super().__post_init__()
        if self.beta_schedule == "quantile" and not self.quantile_beta_min <= self.beta <= self.quantile_beta_max:
            raise ConfigError(f"config key 'beta' ({self.beta}) must lie in [quantile_beta_min, quantile_beta_max]")
        if self.loss_type == "robust" and self.label_smoothing >= 0.5:
            raise ConfigError("config key 'label_smoothing' must be < 0.5 for the robust loss")

    def make_schedule(self):
        if self.beta_schedule == "beta_dpo":
            return BetaDPOSchedule(self.beta, self.beta_dpo_alpha, self.beta_dpo_momentum, self.beta_dpo_rho)
        if self.beta_schedule == "quantile":
            return QuantileBetaSchedule(
                self.beta, self.quantile_delta, self.quantile_momentum, self.quantile_alpha, self.quantile_gamma,
                self.quantile_beta_min, self.quantile_beta_max, self.quantile_warmup_steps,
            )
        return ConstantBeta(self.beta)


def build_dpo_trainer(config: DPOJobConfig) -> ScheduledDPOTrainer:
    """Validate, load and normalise the pairs, load the models, return a ready trainer."""
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    if config.ref_model_name_or_path:
        check_model_source(config.ref_model_name_or_path)
    if not config.dataset_name:
        raise ConfigError("config key 'dataset_name' is empty: give a .jsonl file of pairs or a hub dataset id")
    schedule = config.make_schedule()
    trl_args = DPOConfig(
        **config.trl_kwargs(DPOConfig),
        beta=config.beta,
        max_length=config.max_length,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
    )
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    rows = load_rows(config.dataset_name, config.dataset_train_split, config.task_options, preference=True)
    pairs = normalize_pairs(rows, config.base_model_mode, config.hh_format)
    log.info(f"DPO ({config.loss_type}, β schedule {config.beta_schedule}) on {len(pairs)} pairs from {config.dataset_name}")
    ref_model = (
        load_model(config.ref_model_name_or_path, config.dtype, config.trust_remote_code)
        if config.ref_model_name_or_path
        else None
    )
    return ScheduledDPOTrainer(
        model=load_model_for_training(config),
        ref_model=ref_model,
        args=trl_args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=config.lora_config(),
        callbacks=[MetricsFileCallback(config.output_dir)],
        beta_schedule=schedule,
        loss_type=config.loss_type,
        label_smoothing=config.label_smoothing,
        rpo_alpha=config.rpo_alpha,
        on_nonfinite_loss=config.on_nonfinite_loss,
    )


def run_dpo(config: DPOJobConfig) -> dict:
    """Train; save the final model (or adapter); return the train metrics and the final β."""
    trainer = build_dpo_trainer(config)
    metrics = train_and_save(trainer, config.output_dir, config.resume)
    return {**metrics, "final_beta": float(trainer.beta_schedule.beta)}
