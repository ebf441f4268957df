"""The SDPO self-distillation loss: match a stop-gradient teacher token by token.

Hübotter et al. 2026, "Self-Distillation Policy Optimization" (https://arxiv.org/abs/2601.20802),
reference code lasgroup/SDPO. On the student's own sampled completion, at every response token
t, the student's next-token distribution ``s`` is pulled toward the teacher's ``t`` (the same
model shown a better context), which gets no gradient.

Divergence per token, with α ∈ [0, 1]:

* α = 0: forward KL, ``KL(t ‖ s)``;
* α = 1: reverse KL, ``KL(s ‖ t)``;
* otherwise the α-skewed Jensen–Shannon divergence: with the mixture
  ``m = (1−α)·s + α·t`` (computed in log space with log-sum-exp),
  ``D = (1−α)·KL(s ‖ m) + α·KL(t ‖ m)``.

Distributions are represented on the student's top-k tokens (indices chosen by the student, the
teacher's log-probs gathered at the same indices). With ``add_tail`` the rest of the
probability mass is one more bucket, ``log(1 − Σ_topk p) = log(−expm1(min(logsumexp(topk), −1e-7)))``;
without it both are renormalised over the k tokens.

Without top-k tensors (only the sampled tokens' log-probs are known) the loss is the
sampled-token estimator of the reverse KL, ``(log s(y) − log t(y)).detach() · log s(y)``, which
requires α = 1.

When the completions were sampled by an older policy and ``is_clip`` is set, each token is
weighted by the truncated importance ratio ``min(exp(clamp(log s − log old, −20, 20)), is_clip)``
(no gradient). ``is_clip=None`` means no importance correction at all, as in the reference code
(not an unclipped ratio, which could reach e^20). The loss is the mean over tokens where
``response_mask × sample_mask`` is 1, or, with the reference's aggregation
(:func:`sequence_mean_weights`), a token mean per sample averaged over all samples.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

TAIL_CLAMP = -1e-7  # keeps log(1 - mass) finite when the top-k hold (numerically) all the mass


def _with_tail(topk_log_probs: torch.Tensor) -> torch.Tensor:
    """``(..., K)`` log-probs -> ``(..., K+1)`` with the rest-of-vocabulary bucket appended."""
    mass = torch.logsumexp(topk_log_probs, dim=-1, keepdim=True).clamp(max=TAIL_CLAMP)
    return torch.cat([topk_log_probs, torch.log(-torch.expm1(mass))], dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) over the last dimension, from log-probs; tokens with p = 0 contribute 0
    (0 · log 0 = 0, without the NaN that 0 · (−inf) would give, in values or gradients)."""
    p = log_p.exp()
    log_ratio = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * log_ratio).sum(dim=-1)


def divergence(student: torch.Tensor, teacher: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-position divergence between distributions given as log-probs ``(..., V)``."""
    if alpha == 0.0:
        return _kl(teacher, student)
    if alpha == 1.0:
        return _kl(student, teacher)
    # Python-float weights keep the inputs' dtype (float64 stays exact)
    mixture = torch.logsumexp(torch.stack([student + math.log1p(-alpha), teacher + math.log(alpha)]), dim=0)
    return (1 - alpha) * _kl(student, mixture) + alpha * _kl(teacher, mixture)


def sequence_mean_weights(mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` weights ``1/n_i`` on each of sample i's ``n_i`` distilled tokens (where ``mask``
    is 1), 0 elsewhere::

        mask [[1, 1, 0],      weights [[0.5, 0.5, 0],
              [1, 0, 0],               [1,   0,   0],
              [0, 0, 0]]               [0,   0,   0]]

    Summed with the per-token loss and divided by the number of samples B (with or without a
    teacher signal), this is lasgroup/SDPO's aggregation: verl's ``token-mean`` over micro-batches
    of one sample (``ppo_micro_batch_size_per_gpu: 1``), each weighted 1/B of the mini-batch
    (``loss_scale_factor``). Each sample's tokens share one sample's weight, and a sample without a
    signal adds 0 while it still counts in B."""
    tokens = mask.sum(dim=-1, keepdim=True)
    return mask / tokens.clamp(min=1)


def self_distillation_loss(
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    student_topk_log_probs: torch.Tensor | None = None,
    teacher_topk_log_probs: torch.Tensor | None = None,
    alpha: float = 0.5,
    is_clip: float | None = 2.0,
    add_tail: bool = True,
    old_log_probs: torch.Tensor | None = None,
    sample_mask: torch.Tensor | None = None,
    num_tokens: torch.Tensor | float | None = None,
    token_weights: torch.Tensor | None = None,
    aggregation_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SDPO loss and metrics.

    Args:
        student_log_probs: ``(B, T)`` student log-prob of each sampled response token.
        teacher_log_probs: ``(B, T)`` teacher log-prob of the same tokens (no gradient used).
        response_mask: ``(B, T)`` 1 on response tokens.
        student_topk_log_probs: ``(B, T, K)`` student log-probs (full-vocabulary normalised) of
            its own top-k tokens; with ``teacher_topk_log_probs`` selects top-k mode.
        teacher_topk_log_probs: ``(B, T, K)`` teacher log-probs at the student's top-k indices.
        alpha: 0 forward KL, 1 reverse KL, in between the α-skewed JSD.
        is_clip: upper clip of the importance weight (None: no importance correction).
        add_tail: top-k mode: add the rest-mass bucket (else renormalise over the k).
        old_log_probs: ``(B, T)`` log-probs under the sampling policy, if it was stale.
        sample_mask: ``(B,)`` 0 for samples without a teacher signal (no demonstration or feedback).
        num_tokens: divide the summed per-token loss by this count instead of this batch's own
            token count: the distilled tokens of the whole batch over every process and
            micro-batch (scaled as the trainer's gradient averaging needs), so that N processes
            give the token mean of one process with the same global batch (TRL's ``dapo``
            normalisation of its GRPO loss).
        token_weights: ``(B, T)`` or ``(B, 1)`` weights multiplied into each token's loss, without
            gradient: the trainer/sampler probability ratio of samples drawn by vLLM (truncated or
            masked as TRL computes it), so that distillation on them is corrected as GRPO's loss is.
        aggregation_weights: ``(B, T)`` weights of each token in the summed loss
            (:func:`sequence_mean_weights` for the reference's aggregation, with ``num_tokens``
            then the number of samples): how the sum is shared, not each token's divergence, so the
            logged ``divergence`` stays the token mean.

    Returns:
        ``(loss, metrics)``: the scalar loss (the token mean unless ``num_tokens``), and floats
        for logging (``divergence``: this batch's own token mean).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    topk_mode = student_topk_log_probs is not None and teacher_topk_log_probs is not None
    if not topk_mode and (student_topk_log_probs is not None or teacher_topk_log_probs is not None):
        raise ValueError("give both student_topk_log_probs and teacher_topk_log_probs, or neither")
    if not topk_mode and alpha != 1.0:
        raise ValueError(f"the sampled-token estimator is the reverse KL: alpha must be 1.0, got {alpha}")

    mask = response_mask.to(student_log_probs.dtype)
    if sample_mask is not None:
        mask = mask * sample_mask.to(mask.dtype)[:, None]

    if topk_mode:
        student, teacher = student_topk_log_probs, teacher_topk_log_probs.detach()
        if add_tail:
            student, teacher = _with_tail(student), _with_tail(teacher)
        else:
            student, teacher = torch.log_softmax(student, dim=-1), torch.log_softmax(teacher, dim=-1)
        per_token = divergence(student, teacher, alpha)  # (B, T)
    else:
        log_ratio = (student_log_probs - teacher_log_probs).detach()
        per_token = log_ratio * student_log_probs  # gradient of E_s[log s - log t] through log s(y)

    metrics: dict[str, float] = {}
    per_token = _token_weighted(per_token, student_log_probs, old_log_probs, is_clip, token_weights, mask, metrics)

    tokens = mask.sum()
    masked = per_token * mask
    mean = masked.sum() / tokens.clamp(min=1)
    total = (masked * aggregation_weights.detach()).sum() if aggregation_weights is not None else masked.sum()
    metrics["distill_tokens"] = float(tokens)
    metrics["divergence"] = float(mean.detach())
    return (mean if num_tokens is None else total / num_tokens), metrics


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp(min=1))


def _token_weighted(
    per_token: torch.Tensor, student_log_probs: torch.Tensor, old_log_probs: torch.Tensor | None, is_clip: float | None,
    token_weights: torch.Tensor | None, mask: torch.Tensor, metrics: dict,
) -> torch.Tensor:
    """Each token's loss times, without gradient, the truncated importance weight of a stale
    sample, ``min(exp(clamp(log s − log old, −20, 20)), is_clip)`` (logging ``is_clip_fraction`` and
    ``is_weight``), and the caller's ``token_weights``."""
    if old_log_probs is not None and is_clip is not None:
        ratio = torch.exp(torch.clamp(student_log_probs - old_log_probs, -20.0, 20.0)).detach()
        metrics["is_clip_fraction"] = _masked_mean((ratio > is_clip).to(mask.dtype), mask)
        ratio = ratio.clamp(max=is_clip)
        metrics["is_weight"] = _masked_mean(ratio, mask)
        per_token = per_token * ratio
    if token_weights is not None:
        per_token = per_token * token_weights.detach()
    return per_token


def mixed_advantage_loss(
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    reward_advantages: torch.Tensor,
    response_mask: torch.Tensor,
    distill_mask: torch.Tensor,
    grpo_weight: float,
    old_log_probs: torch.Tensor | None = None,
    is_clip: float | None = 2.0,
    num_tokens: torch.Tensor | float | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """SDPO mixed with GRPO in advantage space (Hübotter et al. 2026): one policy gradient whose
    per-token advantage is

        A_t = λ·(r_i − mean_group r) + (1−λ)·m_t·(log t(y_t) − log s(y_t))

    with the group's unnormalised GRPO advantage of sample i, SDPO's token advantage (the
    sampled-token reverse-KL estimator's, so the loss at λ = 0 is :func:`self_distillation_loss`'s
    sampled-token loss) and ``m_t`` 1 on the tokens distilled (the sample has a teacher signal);
    the loss is ``−Σ_t w_t·A_t·log s(y_t) / num_tokens`` over the response tokens, A and the
    weights w (the truncated importance ratio of stale samples, ``token_weights``) without gradient.
    Unlike a mix of the two losses, a token both push on gets one advantage, and a sample whose
    group has no reward spread (all fail) still moves where its teacher disagrees.

    Args:
        student_log_probs, teacher_log_probs: ``(B, T)`` log-probs of the sampled tokens.
        reward_advantages: ``(B, 1)`` (or ``(B, T)``, the same on every token of a sample)
            ``r_i − mean`` of sample i's group, not divided by the std.
        response_mask: ``(B, T)`` 1 on response tokens (the GRPO term's tokens).
        distill_mask: ``(B, T)`` 1 on the tokens SDPO distils (within the response).
        grpo_weight: λ ∈ [0, 1].
        num_tokens: the denominator (default: this batch's response tokens), as in
            :func:`self_distillation_loss`.

    Returns:
        ``(loss, metrics)``; metrics: ``divergence`` (the sampled-token reverse-KL estimate over the
        distilled tokens) and ``distill_tokens``.
    """
    if not 0.0 <= grpo_weight <= 1.0:
        raise ValueError(f"grpo_weight must be in [0, 1], got {grpo_weight}")
    mask = response_mask.to(student_log_probs.dtype)
    distill = distill_mask.to(mask.dtype) * mask
    log_ratio = (teacher_log_probs - student_log_probs).detach()  # (B, T): SDPO's token advantage
    advantages = grpo_weight * reward_advantages.detach().to(mask.dtype) + (1 - grpo_weight) * distill * log_ratio
    per_token = -advantages * student_log_probs
    metrics: dict[str, float] = {}
    per_token = _token_weighted(per_token, student_log_probs, old_log_probs, is_clip, token_weights, mask, metrics)
    total = (per_token * mask).sum()
    metrics["distill_tokens"] = float(distill.sum())
    metrics["divergence"] = float((-log_ratio * distill).sum() / distill.sum().clamp(min=1))
    return total / (mask.sum().clamp(min=1) if num_tokens is None else num_tokens), metrics


def distillation_inputs_in_chunks(
    student_hidden: torch.Tensor,
    student_head: Callable[[torch.Tensor], torch.Tensor],
    teacher_logits: Callable[[slice], torch.Tensor],
    completion_ids: torch.Tensor,
    topk: int | None,
    chunk_size: int,
) -> dict[str, torch.Tensor | None]:
    """The inputs of :func:`self_distillation_loss`, computed ``chunk_size`` positions at a time so
    that no ``(B, T, V)`` tensor ever exists: memory grows with ``B·T·k`` plus one chunk's
    ``B·chunk_size·V``, not with ``B·T·V``.

    Each chunk projects the student's hidden states to logits (``student_head``: ``(B, c, H)`` ->
    ``(B, c, V)``, temperature included), takes their log-softmax, the sampled tokens' log-probs and
    (``topk``) the student's top-k tokens and log-probs; then the teacher's logits for the same
    positions (``teacher_logits(positions)``, no gradient), gathered at the sampled tokens and the
    student's top-k. The student's part runs under activation checkpointing: its chunk of
    full-vocabulary log-probs is freed after the forward and recomputed in the backward pass.
    Log-softmax and top-k act on each position alone, so the values are those of the unchunked
    computation, and the loss on them is the same.

    Args:
        student_hidden: ``(B, T, H)`` the student's last hidden states at the T completion positions
            (each predicting the next completion token), with gradient.
        completion_ids: ``(B, T)`` the sampled tokens.

    Returns:
        ``student_log_probs``, ``teacher_log_probs`` and ``student_entropy`` (no gradient) ``(B, T)``; with ``topk``,
        ``student_topk_log_probs`` and ``teacher_topk_log_probs`` ``(B, T, K)`` (else None).
    """
    from torch.utils.checkpoint import checkpoint

    def student_chunk(hidden: torch.Tensor, sampled: torch.Tensor):
        log_probs = torch.log_softmax(student_head(hidden).float(), dim=-1)  # (B, c, V), recomputed in backward
        sampled_log_probs = log_probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():  # −Σ p log p, for logging (entropy collapse); one (B, c, V) temporary, not two
            entropy = -torch.linalg.vecdot(log_probs.exp(), log_probs, dim=-1)
        if not topk:
            return sampled_log_probs, entropy, None, None
        indices = log_probs.detach().topk(topk, dim=-1).indices
        return sampled_log_probs, entropy, log_probs.gather(-1, indices), indices

    parts: dict[str, list[torch.Tensor]] = {"student": [], "entropy": [], "teacher": [], "student_topk": [], "teacher_topk": []}
    for start in range(0, completion_ids.size(1), chunk_size):
        positions = slice(start, start + chunk_size)
        sampled = completion_ids[:, positions]
        student, entropy, student_topk, indices = checkpoint(student_chunk, student_hidden[:, positions], sampled, use_reentrant=False)
        parts["entropy"].append(entropy)
        with torch.no_grad():
            teacher = torch.log_softmax(teacher_logits(positions).float(), dim=-1)  # (B, c, V), freed after this chunk
            parts["teacher"].append(teacher.gather(-1, sampled.unsqueeze(-1)).squeeze(-1))
            if topk:
                parts["teacher_topk"].append(teacher.gather(-1, indices))
            del teacher
        parts["student"].append(student)
        if topk:
            parts["student_topk"].append(student_topk)
    joined = {name: torch.cat(values, dim=1) if values else None for name, values in parts.items()}
    return {
        "student_log_probs": joined["student"],
        "student_entropy": joined["entropy"],
        "teacher_log_probs": joined["teacher"],
        "student_topk_log_probs": joined["student_topk"],
        "teacher_topk_log_probs": joined["teacher_topk"],
    }
