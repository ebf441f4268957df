"""Reference-free preference optimisation on TRL's trainers: SimPO and ORPO (``posttrain dpo`` with
``loss_type: simpo`` or ``orpo``). No reference model is loaded; TRL computes the loss.

* SimPO — Meng et al. 2024 (https://arxiv.org/abs/2405.14734), eq. 6: with the length-normalised
  log-likelihood ``r(y) = (1/|y|) log πθ(y|x)`` as the implicit reward and a target margin γ,
  ``L = −log σ(β·(r(y_w) − r(y_l)) − γ)``. TRL 1.16 has it as ``loss_type="simpo"`` of
  ``trl.experimental.cpo.CPOTrainer`` (CPO, Xu et al. 2024); its ``cpo_alpha`` adds CPO's NLL of
  the chosen responses (CPO-SimPO), which posttrain sets from ``rpo_alpha``.
* ORPO — Hong et al. 2024 (https://arxiv.org/abs/2403.07691), eq. 6–7: with the odds
  ``odds(y) = P(y) / (1 − P(y))`` of the length-normalised likelihood,
  ``L = L_NLL(y_w) − λ·log σ(log odds(y_w) − log odds(y_l))``; λ is ``beta``.
  ``trl.experimental.orpo.ORPOTrainer``.

Both live in ``trl.experimental`` in TRL 1.16 (which warns on import), so this module is imported
only when one of them is asked for. :data:`TRAINERS` maps each loss type to its TRL config class
and posttrain's trainer.
"""

from __future__ import annotations

from trl.experimental.cpo import CPOConfig, CPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.nonfinite import NonFiniteLossGuard


class GuardedCPOTrainer(NonFiniteLossGuard, CompleteCheckpoints, CPOTrainer):
    """TRL's CPOTrainer (SimPO with ``loss_type="simpo"``) with posttrain's non-finite-loss guard and
    complete checkpoints."""


class GuardedORPOTrainer(NonFiniteLossGuard, CompleteCheckpoints, ORPOTrainer):
    """TRL's ORPOTrainer with posttrain's non-finite-loss guard and complete checkpoints."""


TRAINERS = {"simpo": (CPOConfig, GuardedCPOTrainer), "orpo": (ORPOConfig, GuardedORPOTrainer)}
