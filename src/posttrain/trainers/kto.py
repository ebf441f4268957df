"""KTO on TRL's KTOTrainer: :class:`GuardedKTOTrainer` (what ``posttrain kto`` trains with).

KTO — Ethayarajh et al. 2024 (https://arxiv.org/abs/2402.01306) — learns from single
completions labelled desirable or undesirable instead of pairs. With the implicit reward
``r(x, y) = log πθ(y|x) − log πref(y|x)`` and the reference point ``z0``, an estimate of
``KL(πθ ‖ πref)``: the batch mean of ``r(x, y')`` over mismatched prompt/completion pairs (each
prompt with its neighbour's completion), detached and clamped at 0, the loss of a row is

* desirable: ``λ_D·(1 − σ(β·(r − z0)))``;
* undesirable: ``λ_U·(1 − σ(β·(z0 − r)))``,

averaged over the batch. ``loss_type="apo_zero_unpaired"`` is APO-zero (D'Oosterlinck et al.
2024, https://arxiv.org/abs/2408.06266) on unpaired rows: ``1 − σ(β·r)`` for desirable rows,
``σ(β·r)`` for undesirable ones, no reference point. TRL computes the loss, the reference point
and the metrics; posttrain adds its non-finite-loss guard and complete checkpoints.
"""

from __future__ import annotations

from trl import KTOTrainer

from posttrain.trainers.base_mode import NoEOSInBaseMode
from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.nonfinite import NonFiniteLossGuard


class GuardedKTOTrainer(NoEOSInBaseMode, NonFiniteLossGuard, CompleteCheckpoints, KTOTrainer):
    """TRL's KTOTrainer with posttrain's non-finite-loss guard and complete checkpoints; in
    base-model mode responses end at END (:class:`~posttrain.trainers.base_mode.NoEOSInBaseMode`)."""

    response_columns = ("completion_ids",)
