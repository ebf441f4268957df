"""The DPO loss family on implicit-reward log-ratios.

For a preference pair (prompt x, chosen y_w, rejected y_l) the log-ratios are
``chosen_logratios = log πθ(y_w|x) − log πref(y_w|x)`` and likewise for the rejected response;
their difference is the implicit-reward gap ``M = chosen_logratios − rejected_logratios``.

Loss types (each per pair, shape ``(B,)``):

* ``sigmoid`` — DPO, Rafailov et al. 2023 (https://arxiv.org/abs/2305.18290), eq. 7:
  ``−log σ(βM)``. With ``label_smoothing`` ε > 0 it is conservative DPO (cDPO, Mitchell 2023):
  ``−(1−ε) log σ(βM) − ε log σ(−βM)``.
* ``ipo`` — IPO, Azar et al. 2023 (https://arxiv.org/abs/2310.12036), eq. 17:
  ``(M − 1/(2β))²``. Given completion lengths, the log-ratios are first averaged per token, as
  TRL does (the normalisation the IPO authors used for their results).
* ``hinge`` — SLiC-HF, Zhao et al. 2023 (https://arxiv.org/abs/2305.10425): ``max(0, 1 − βM)``.
* ``robust`` — robust DPO, Chowdhury et al. 2024 (https://arxiv.org/abs/2403.00409), eq. 5, an
  unbiased loss under label noise with flip rate ε ∈ [0, 0.5):
  ``[−(1−ε) log σ(βM) + ε log σ(−βM)] / (1 − 2ε)``.

For the same inputs these equal TRL's DPOTrainer losses (``tests/losses/test_dpo_against_trl.py``
checks against TRL itself). One exception: TRL 1.16's ``sigmoid`` ignores ``label_smoothing``, so
cDPO (sigmoid with ε > 0) has no TRL counterpart; use ``robust`` for TRL's label-smoothed loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float | torch.Tensor,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair DPO-family loss.

    Args:
        chosen_logratios: ``(B,)`` log πθ(y_w|x) − log πref(y_w|x), summed over response tokens.
        rejected_logratios: ``(B,)`` the same for y_l.
        beta: strength of the KL regularisation (a float or a 0-d tensor; no gradient flows to it).
        loss_type: one of ``sigmoid``, ``ipo``, ``hinge``, ``robust``.
        label_smoothing: ε, the assumed rate of flipped labels (cDPO for sigmoid, robust DPO).
        chosen_lengths, rejected_lengths: ``(B,)`` response token counts; IPO averages per token
            when given.

    Returns:
        ``(B,)`` loss per pair; the trainer takes the mean (over kept pairs for β-DPO).
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown loss_type '{loss_type}' (expected one of {', '.join(DPO_LOSS_TYPES)})")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    beta = beta.detach() if isinstance(beta, torch.Tensor) else beta
    margin = chosen_logratios - rejected_logratios  # M, (B,)

    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)
    if loss_type == "ipo":
        if chosen_lengths is not None and rejected_lengths is not None:
            margin = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        return (margin - 1 / (2 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1 - beta * margin)
    # robust
    clean = -(1 - label_smoothing) * F.logsigmoid(beta * margin)
    flipped = label_smoothing * F.logsigmoid(-beta * margin)
    return (clean + flipped) / (1 - 2 * label_smoothing)
