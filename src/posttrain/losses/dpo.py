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

Each loss type is one pure function in :data:`DPO_LOSSES`, the registry of the losses posttrain
computes itself (the ones a dynamic β works with); a new loss is one function and one entry there.
``posttrain dpo`` hands TRL's other loss types to TRL's own code (:mod:`posttrain.commands.dpo`).

For the same inputs these equal TRL's DPOTrainer losses (``tests/losses/test_dpo_against_trl.py``
checks against TRL itself). One exception: TRL 1.16's ``sigmoid`` ignores ``label_smoothing``, so
cDPO (sigmoid with ε > 0) has no TRL counterpart; use ``robust`` for TRL's label-smoothed loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PairLogratios:
    """A batch's log-ratios and response lengths, all ``(B,)``: what every DPO-family loss reads.

    They travel together because the losses differ in what they derive from them (IPO averages
    per token when the lengths are known, the others use the summed margin).
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor | None = None
    rejected_lengths: torch.Tensor | None = None

    def margin(self) -> torch.Tensor:
        """The implicit-reward gap M = chosen − rejected."""
        return self.chosen - self.rejected

    def per_token_margin(self) -> torch.Tensor:
        """M with each log-ratio divided by its response length; M itself without both lengths."""
        if self.chosen_lengths is None or self.rejected_lengths is None:
            return self.margin()
        return self.chosen / self.chosen_lengths.clamp(min=1) - self.rejected / self.rejected_lengths.clamp(min=1)


def sigmoid_loss(logratios: PairLogratios, beta: float | torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7): ``−log σ(βM)``; with ε > 0, conservative DPO
    (cDPO, Mitchell 2023): ``−(1−ε) log σ(βM) − ε log σ(−βM)``."""
    margin = logratios.margin()
    return -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)


def ipo_loss(logratios: PairLogratios, beta: float | torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17): ``(M − 1/(2β))²`` on the per-token margin, the normalisation
    TRL and the IPO authors use. ε is not part of IPO and is ignored."""
    return (logratios.per_token_margin() - 1 / (2 * beta)) ** 2


def hinge_loss(logratios: PairLogratios, beta: float | torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """SLiC-HF (Zhao et al. 2023): ``max(0, 1 − βM)``. ε is not part of SLiC and is ignored."""
    return torch.relu(1 - beta * logratios.margin())


def robust_loss(logratios: PairLogratios, beta: float | torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, eq. 5), unbiased under a label-flip rate ε:
    ``[−(1−ε) log σ(βM) + ε log σ(−βM)] / (1 − 2ε)``."""
    margin = logratios.margin()
    clean = -(1 - label_smoothing) * F.logsigmoid(beta * margin)
    flipped = label_smoothing * F.logsigmoid(-beta * margin)
    return (clean + flipped) / (1 - 2 * label_smoothing)


DPOLossFunction = Callable[[PairLogratios, float | torch.Tensor, float], torch.Tensor]

DPO_LOSSES: dict[str, DPOLossFunction] = {
    "sigmoid": sigmoid_loss,
    "ipo": ipo_loss,
    "hinge": hinge_loss,
    "robust": robust_loss,
}
DPO_LOSS_TYPES = tuple(DPO_LOSSES)  # the names alone, as earlier versions exported them

# The names again, as a type (the trainer's loss_type): a type checker cannot read a dict's keys
# (tests/losses/test_dpo.py keeps the two equal).
DPOLossType = Literal["sigmoid", "ipo", "hinge", "robust"]


def dpo_loss(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float | torch.Tensor,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pair DPO-family loss: the checks every loss shares, then the ``loss_type`` entry of
    :data:`DPO_LOSSES`.

    Args:
        chosen_logratios: ``(B,)`` log πθ(y_w|x) − log πref(y_w|x), summed over response tokens.
        rejected_logratios: ``(B,)`` the same for y_l.
        beta: strength of the KL regularisation (a float or a 0-d tensor; no gradient flows to it).
        loss_type: a key of :data:`DPO_LOSSES`: ``sigmoid``, ``ipo``, ``hinge``, ``robust``.
        label_smoothing: ε, the assumed rate of flipped labels (cDPO for sigmoid, robust DPO).
        chosen_lengths, rejected_lengths: ``(B,)`` response token counts; IPO averages per token
            when given.

    Returns:
        ``(B,)`` loss per pair; the trainer takes the mean (over kept pairs for β-DPO).
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown loss_type '{loss_type}' (expected one of {', '.join(DPO_LOSSES)})")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    beta = beta.detach() if isinstance(beta, torch.Tensor) else beta
    logratios = PairLogratios(chosen_logratios, rejected_logratios, chosen_lengths, rejected_lengths)
    return DPO_LOSSES[loss_type](logratios, beta, label_smoothing)
