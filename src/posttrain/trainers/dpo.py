"""The DPO family on TRL's DPOTrainer: :class:`ScheduledDPOTrainer`, posttrain's own losses with a
dynamic β (what ``posttrain dpo`` trains with for sigmoid, ipo, hinge and robust), and
:class:`GuardedDPOTrainer`, TRL's own loss computation for its other loss types (constant β).

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
from pathlib import Path

import torch
from trl import DPOTrainer
from trl.trainer.utils import use_adapter

from posttrain.artifacts import write_json
from posttrain.errors import PosttrainError
from posttrain.losses import dpo_loss
from posttrain.losses.dpo import DPOLossType
from posttrain.trainers.base_mode import NoEOSInBaseMode
from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.margin_log import MarginLog
from posttrain.trainers.nonfinite import NonFiniteLossGuard

SCHEDULE_FILE = "beta_schedule.json"


class GuardedDPOTrainer(NoEOSInBaseMode, NonFiniteLossGuard, CompleteCheckpoints, DPOTrainer):
    """TRL's DPOTrainer computing its own loss (``args.loss_type``, ``args.loss_weights``, a constant
    ``args.beta``), with posttrain's non-finite-loss guard and complete checkpoints: the loss types
    posttrain does not compute itself (exo_pair, bco_pair, apo_zero, ..., and weighted lists)."""


class ScheduledDPOTrainer(NoEOSInBaseMode, NonFiniteLossGuard, CompleteCheckpoints, DPOTrainer):
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
        if not self.args.should_save:
            return
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
