"""``posttrain dpo``: the DPO family with a dynamic β, on TRL's DPOTrainer.

TRL's DPOTrainer prepares the data (chat templates, tokenization, truncation), builds the
reference model (a frozen copy, the adapter-disabled base under LoRA, or precomputed log-probs),
and runs training. posttrain replaces one method, ``_compute_loss``, so that each batch:

1. computes sequence log-probs of chosen and rejected responses under the policy and reference
   (TRL's fused log-prob head; the reference as TRL configured it);
2. gathers the implicit-reward gaps M over all processes (β-DPO is defined on the global batch);
3. asks the β schedule for (β, keep mask) — identical on every rank;
4. averages :func:`posttrain.losses.dpo_loss` over the kept pairs of the global batch;
5. logs TRL's metrics plus ``beta`` and ``kept_fraction``, and the margin log.

The schedule's state is written into every checkpoint and restored on resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import use_adapter

from posttrain.artifacts import write_json
from posttrain.config import config_field
from posttrain.data.preference import normalize_pairs
from posttrain.errors import ConfigError, PosttrainError
from posttrain.losses import BetaDPOSchedule, ConstantBeta, QuantileBetaSchedule, dpo_loss
from posttrain.losses.dpo import DPOLossType
from posttrain.models import LoraArguments, ModelArguments, load_tokenizer
from posttrain.models.loading import check_model_source, load_model, load_model_for_training
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks.sources import load_rows
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.margin_log import MarginLog
from posttrain.trainers.nonfinite import NonFiniteLossGuard
from posttrain.trainers.settings import TrainingSettings

log = get_logger(__name__)

SCHEDULE_FILE = "beta_schedule.json"


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


class ScheduledDPOTrainer(NonFiniteLossGuard, CompleteCheckpoints, DPOTrainer):
    """TRL's DPOTrainer with posttrain's loss, a β schedule and a margin log."""

    def __init__(self, *args, beta_schedule, loss_type: DPOLossType, label_smoothing: float, rpo_alpha: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta_schedule = beta_schedule
        self.posttrain_loss_type = loss_type
        self.posttrain_label_smoothing = label_smoothing
        self.rpo_alpha = rpo_alpha
        self.schedule_updates = 0  # batches seen by the schedule; seeds its sampling
        self.margin_log = MarginLog(self.args.output_dir)

    # -- log-probs ---------------------------------------------------------------------------

    def _sequence_logps(self, model, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        """Sum of response-token log-probs, ``(2B,)`` for the [chosen; rejected] batch."""
        model_inputs = {k: v for k, v in inputs.items() if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        outputs = model(**model_inputs, labels=labels, fused_lm_head=True, use_cache=False)
        response_mask = inputs["completion_mask"][:, 1:]  # log_probs[t] scores token t+1
        return (outputs.log_probs[:, -response_mask.shape[1] :] * response_mask).sum(dim=1)

    def _reference_logps(self, model, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        if "ref_chosen_logps" in inputs:  # precompute_ref_log_probs
            return torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
        with torch.no_grad():
            if self.ref_model is None:  # LoRA: the base model with the adapter switched off
                unwrapped = self.accelerator.unwrap_model(self.model)
                with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                    return self._sequence_logps(self.model, inputs, labels)
            return self._sequence_logps(self.ref_model, inputs, labels)

    # -- the loss ----------------------------------------------------------------------------

    def _gather_margins(self, margins: torch.Tensor) -> tuple[torch.Tensor, slice, torch.Tensor]:
        """All processes' margins (padding dropped), this process's slice of them, valid mask."""
        padded = self.accelerator.pad_across_processes(margins, dim=0, pad_index=float("nan"))
        gathered = self.accelerator.gather(padded)  # (world * max_B,)
        start = self.accelerator.process_index * padded.shape[0]
        return gathered, slice(start, start + margins.shape[0]), ~torch.isnan(gathered)

    def _compute_loss(self, model, inputs, return_outputs=False):
        mode = "train" if model.training else "eval"
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        policy_logps = self._sequence_logps(model, inputs, labels)
        reference_logps = self._reference_logps(model, inputs, labels)
        chosen_logratios, rejected_logratios = (policy_logps - reference_logps).chunk(2)  # (B,) each
        margins = (chosen_logratios - rejected_logratios).detach()
        if not torch.isfinite(margins).all():
            raise PosttrainError(f"non-finite implicit-reward margins at step {self.state.global_step + 1}")
        chosen_lengths, rejected_lengths = completion_mask.sum(dim=1).chunk(2)

        gathered, local, valid = self._gather_margins(margins)
        if mode == "train":
            generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self.schedule_updates)
            beta, keep_valid = self.beta_schedule.step(gathered[valid].cpu(), generator)
            self.schedule_updates += 1
            if self.accelerator.num_processes > 1:  # same margins, seed and state: β must agree
                betas = self.accelerator.gather(torch.tensor([float(beta)], device=margins.device))
                if not torch.all(betas == betas[0]):
                    raise PosttrainError(f"processes disagree on β at step {self.state.global_step + 1}: {betas.tolist()}")
            keep = torch.zeros_like(valid)
            keep[valid] = keep_valid.to(keep.device)
        else:  # evaluation neither moves the schedule nor drops pairs
            beta, keep = self.beta_schedule.beta, valid

        per_pair = dpo_loss(
            chosen_logratios, rejected_logratios, beta, self.posttrain_loss_type, self.posttrain_label_smoothing,
            chosen_lengths, rejected_lengths,
        )
        local_keep = keep[local].to(per_pair.dtype)
        num_kept = keep.sum().clamp(min=1)
        # Mean over the kept pairs of the *global* batch. DDP averages gradients over processes,
        # so each process contributes its kept sum scaled by world size / global kept count.
        loss = (per_pair * local_keep).sum() * self.accelerator.num_processes / num_kept
        if self.rpo_alpha:
            # RPO: token-mean NLL of the kept chosen responses (global batch), keeps their likelihood up
            chosen_logps = policy_logps.chunk(2)[0]
            chosen_tokens = completion_mask[:, 1:].sum(dim=1).chunk(2)[0].to(per_pair.dtype)
            total_tokens = self.accelerator.gather((chosen_tokens * local_keep).sum().reshape(1)).sum().clamp(min=1)
            nll = -(chosen_logps * local_keep).sum() * self.accelerator.num_processes / total_tokens
            loss = loss + self.rpo_alpha * nll
            self._metrics[mode]["nll_loss"].append(nll.detach().item() / self.accelerator.num_processes)

        self._record_metrics(mode, beta, chosen_logratios, rejected_logratios, policy_logps, keep, valid)
        if mode == "train":
            # a collective: every process takes part, the main one writes
            per_pair_all = self.accelerator.gather(
                self.accelerator.pad_across_processes(per_pair.detach(), dim=0, pad_index=float("nan"))
            )
            if self.accelerator.is_main_process:
                self.margin_log.write(
                    step=self.state.global_step + 1,
                    update=self.schedule_updates,
                    beta=float(beta),
                    loss=(per_pair_all[keep].sum() / num_kept).item(),
                    margins=gathered[valid],
                    kept=int(keep.sum()),
                    schedule=self.beta_schedule.state_dict() | {"name": type(self.beta_schedule).__name__},
                )
        return (loss, None) if return_outputs else loss

    def _record_metrics(self, mode, beta, chosen_logratios, rejected_logratios, policy_logps, keep, valid) -> None:
        """TRL's metric names, over all processes, plus beta and the kept fraction."""
        gather = self.accelerator.gather_for_metrics
        chosen_rewards = gather(beta * chosen_logratios.detach())
        rejected_rewards = gather(beta * rejected_logratios.detach())
        chosen_logps, rejected_logps = policy_logps.detach().chunk(2)
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps).mean().item())
        metrics["beta"].append(float(beta))
        metrics["kept_fraction"].append((keep.sum() / valid.sum().clamp(min=1)).item())

    # -- schedule state in checkpoints -------------------------------------------------------

    def save_extra_state(self, checkpoint: Path) -> None:
        write_json(checkpoint / SCHEDULE_FILE, {
            "schedule": type(self.beta_schedule).__name__,
            "state": self.beta_schedule.state_dict(),
            "updates": self.schedule_updates,
        })

    def restore_extra_state(self, checkpoint: Path) -> None:
        path = Path(checkpoint) / SCHEDULE_FILE
        if not path.exists():
            raise PosttrainError(f"{checkpoint} has no {SCHEDULE_FILE}: it was not written by posttrain dpo")
        saved = json.loads(path.read_text())
        if saved["schedule"] != type(self.beta_schedule).__name__:
            raise PosttrainError(f"{checkpoint} was trained with {saved['schedule']}, not {type(self.beta_schedule).__name__}")
        self.beta_schedule.load_state_dict(saved["state"])
        self.schedule_updates = saved["updates"]
        if self.accelerator.is_main_process:
            self.margin_log.truncate(self.schedule_updates)


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
