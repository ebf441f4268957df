"""``posttrain rm``: a reward model (Bradley–Terry) trained on preference pairs, on TRL's RewardTrainer.

The pairs are what ``posttrain dpo`` reads (a ``.jsonl`` of prompt/chosen/rejected such as
``posttrain pairs`` writes, HH-RLHF transcripts, a task's verifier-built pairs, a hub dataset),
checked and normalised the same way (a ``dataset_mixture`` too), and held-out pairs
(``val_ratio``, ``eval_dataset_name``) are evaluated during training as for ``dpo``. Each side is
rendered as the ``reward_model`` judge renders a completion (:mod:`posttrain.data.reward`) and
tokenized before any model is loaded. The model is the checkpoint's backbone with a one-output
score head; the output directory holds it and its tokenizer, loadable by path as a judge
(``posttrain pairs --judge reward_model``, ``posttrain eval --scorer reward_model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerBase
from trl import RewardConfig

from posttrain.config import config_field
from posttrain.data.preference import PreferenceDataArguments, normalize_pairs
from posttrain.data.reward import save_rendering, tokenize_reward_pairs
from posttrain.errors import ConfigError
from posttrain.models import LoraArguments, ModelArguments, load_tokenizer
from posttrain.models.loading import check_model_source, load_reward_model
from posttrain.runtime import get_logger, seed_everything
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.checkpoints import checkpoint_step
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.reward import RewardModelTrainer
from posttrain.trainers.validation import BestMetricCheck, ValidationSettings

log = get_logger(__name__)


@dataclass
class RMJobConfig(PreferenceDataArguments, ValidationSettings, LoraArguments, ModelArguments):
    """Everything ``posttrain rm`` needs."""

    base_model_mode: bool = config_field(
        False, help="Drop the tokenizer's chat template: the model reads prompt and response joined by a newline, "
        "as the reward_model judge reads them with a template-less tokenizer."
    )
    max_length: int = config_field(512, help="Longest prompt + response in tokens; longer pairs are dropped (as TRL does).", ge=8)
    center_rewards_coefficient: float | None = config_field(
        None, help="TRL's weight of mean(reward²) added to the loss, pulling rewards towards 0 (Eisenstein et al. 2023; TRL suggests 0.01).", ge=0
    )

    def __post_init__(self):
        super().__post_init__()
        if self.load_in_4bit:
            raise ConfigError("config key 'load_in_4bit': posttrain rm does not train QLoRA reward models; use use_peft without it")


def reward_rows(located_rows: list[tuple[str, dict]], tokenizer: PreTrainedTokenizerBase, config: RMJobConfig) -> list[dict]:
    """Pairs checked and normalised as for dpo, each side rendered and tokenized as the judge reads
    it. Never in the Instruction/Response form: here base_model_mode only drops the template."""
    pairs = normalize_pairs(located_rows, base_model_mode=False, hh_format=config.hh_format)
    return tokenize_reward_pairs(tokenizer, pairs, config.max_length, config.chat_template_kwargs)


def build_rm_trainer(config: RMJobConfig) -> RewardModelTrainer:
    """Validate, load, render and tokenize the pairs, then load the model; return a ready trainer."""
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    if not (config.dataset_name or config.dataset_mixture):
        raise ConfigError("config key 'dataset_name' is empty: give a .jsonl file of pairs or a hub dataset id (or a dataset_mixture)")
    trl_args = RewardConfig(**config.trl_kwargs(
        RewardConfig,
        max_length=None,  # tokenize_reward_pairs has dropped the overlong pairs
        center_rewards_coefficient=config.center_rewards_coefficient,
    ))
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    rows, eval_rows = config.training_rows(preference=True)
    train_rows = reward_rows(rows, tokenizer, config)
    held_out_rows = reward_rows(eval_rows, tokenizer, config) if eval_rows else None
    log.info(f"reward model on {len(train_rows)} pairs from {config.dataset_name or 'the dataset_mixture'}")
    if held_out_rows:
        log.info(f"evaluating on {len(held_out_rows)} held-out pairs every {config.every} steps")
    model = load_reward_model(config.model_name_or_path, config.dtype, config.trust_remote_code)
    return RewardModelTrainer(
        model=model,
        args=trl_args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(held_out_rows) if held_out_rows else None,
        processing_class=tokenizer,
        peft_config=config.lora_config(model, task_type="SEQ_CLS"),
        callbacks=[MetricsFileCallback(config.output_dir), BestMetricCheck()],
        on_nonfinite_loss=config.on_nonfinite_loss,
    )


def saved_model_evaluation(trainer: RewardModelTrainer) -> dict:
    """The held-out metrics of the model that was saved (none without held-out pairs): those of
    the checkpoint ``load_best_model_at_end`` chose, else of the last step (transformers evaluates
    there)."""
    evaluations = [row for row in trainer.state.log_history if "eval_accuracy" in row]
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint:
        best_step = checkpoint_step(Path(trainer.state.best_model_checkpoint))
        evaluations = [row for row in evaluations if row["step"] == best_step]
    return {key: value for key, value in evaluations[-1].items() if key.startswith("eval_")} if evaluations else {}


def run_rm(config: RMJobConfig) -> dict:
    """Train; save the reward model and its tokenizer; return the train metrics and, with held-out
    pairs, the saved model's preference accuracy and margin on them (``eval_accuracy``, ``eval_margin``)."""
    trainer = build_rm_trainer(config)
    metrics = train_and_save(trainer, config.output_dir, config.resume)
    save_rendering(config.output_dir, config.chat_template_kwargs)  # the judge renders its texts the same way
    return {**metrics, **saved_model_evaluation(trainer)}
