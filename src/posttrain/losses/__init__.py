"""Losses and schedules, as small pure functions and classes (each cites its paper)."""

from posttrain.losses.beta_schedules import BetaDPOSchedule, BetaSchedule, ConstantBeta, QuantileBetaSchedule
from posttrain.losses.dpo import DPO_LOSS_TYPES, DPO_LOSSES, dpo_loss
from posttrain.losses.self_distillation import distillation_inputs_in_chunks, mixed_advantage_loss, self_distillation_loss, sequence_mean_weights

__all__ = [
    "DPO_LOSS_TYPES",
    "DPO_LOSSES",
    "BetaDPOSchedule",
    "BetaSchedule",
    "ConstantBeta",
    "QuantileBetaSchedule",
    "dpo_loss",
    "distillation_inputs_in_chunks",
    "mixed_advantage_loss",
    "self_distillation_loss",
    "sequence_mean_weights",
]
