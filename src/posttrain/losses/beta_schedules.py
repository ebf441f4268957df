"""β schedules for DPO: constant, β-DPO, and the quantile controller.

Every schedule answers ``step(margins, generator) -> (beta, keep_mask)`` once per training batch,
where ``margins`` are the implicit-reward gaps ``M_i`` of the *global* batch (gathered over all
processes, so every rank gets the same answer). The loss of that batch uses the returned β and
only the pairs with ``keep_mask`` true. ``state_dict`` / ``load_state_dict`` round-trip all state
through JSON-compatible values, so a resumed run follows the same β trajectory.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch


class BetaSchedule(Protocol):
    beta: float

    def step(self, margins: torch.Tensor, generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _check_margins(margins: torch.Tensor) -> torch.Tensor:
    margins = margins.detach().float().flatten()
    if margins.numel() == 0:
        raise ValueError("the β schedule got an empty batch of margins")
    if not torch.isfinite(margins).all():
        raise ValueError(f"the β schedule got non-finite margins ({int((~torch.isfinite(margins)).sum())} of {margins.numel()})")
    return margins


def _keep_all(margins: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(margins, dtype=torch.bool)


class ConstantBeta:
    """β fixed for the whole run (standard DPO)."""

    def __init__(self, beta: float = 0.1):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = float(beta)

    def step(self, margins: torch.Tensor, generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
        return self.beta, _keep_all(_check_margins(margins))

    def update(self, margins: torch.Tensor) -> None:
        """Nothing to learn from margins."""

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = float(state["beta"])


class BetaDPOSchedule:
    """β-DPO: dynamic β calibrated on the batch, with data filtering.

    Wu et al., "β-DPO: Direct Preference Optimization with Dynamic β", NeurIPS 2024
    (https://arxiv.org/abs/2407.08639), as in its official code. Per batch of margins M (n pairs):

    1. running statistics first: ``M0 ← m·M0 + (1−m)·mean(M)``, ``σ ← m·σ + (1−m)·std(M)``
       (both start at 0);
    2. weights ``w_i = exp(−½((M_i − M0)/σ)²)``: pairs far from the typical gap, in either
       direction (likely mislabelled, or already too easy), are down-weighted;
    3. keep ``round(n·ρ)`` pairs sampled by ``w`` without replacement;
    4. ``β = β0·(1 + α·(mean(M_kept) − M0))``, clamped to ≥ 1e-3 (no gradient).

    Args:
        beta: β0. alpha: α, sensitivity of β to the batch's gap. momentum: m. rho: ρ, kept fraction.
    """

    def __init__(self, beta: float = 0.1, alpha: float = 0.6, momentum: float = 0.9, rho: float = 0.8):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.beta0, self.alpha, self.momentum, self.rho = float(beta), float(alpha), float(momentum), float(rho)
        self.beta = self.beta0
        self.margin_mean = 0.0  # M0
        self.margin_std = 0.0  # σ

    def step(self, margins: torch.Tensor, generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
        margins = _check_margins(margins)
        n = margins.numel()
        batch_std = margins.std().item() if n > 1 else 0.0
        self.margin_mean = self.momentum * self.margin_mean + (1 - self.momentum) * margins.mean().item()
        self.margin_std = self.momentum * self.margin_std + (1 - self.momentum) * batch_std

        if self.margin_std > 0:
            weights = torch.exp(-0.5 * ((margins - self.margin_mean) / self.margin_std) ** 2)
        else:
            weights = torch.ones_like(margins)
        if not weights.sum() > 0:  # every pair infinitely far out: fall back to uniform
            weights = torch.ones_like(margins)
        # weights of far outliers underflow to 0; sampling without replacement needs n_keep
        # categories with positive weight on every backend, so give them a vanishing floor
        weights = weights.clamp(min=1e-30)
        n_keep = max(1, round(n * self.rho))
        kept = torch.multinomial(weights, n_keep, replacement=False, generator=generator)
        keep_mask = torch.zeros(n, dtype=torch.bool)
        keep_mask[kept] = True

        kept_mean = margins[keep_mask].mean().item()
        self.beta = max(1e-3, self.beta0 * (1 + self.alpha * (kept_mean - self.margin_mean)))
        return self.beta, keep_mask.to(margins.device)

    def state_dict(self) -> dict:
        return {"beta": self.beta, "margin_mean": self.margin_mean, "margin_std": self.margin_std}

    def load_state_dict(self, state: dict) -> None:
        self.beta, self.margin_mean, self.margin_std = float(state["beta"]), float(state["margin_mean"]), float(state["margin_std"])


class QuantileBetaSchedule:
    """Dynamic β steered by the upper quantile of the margin distribution.

    A controller that keeps the share of pairs whose gap exceeds a running threshold τ near δ:

    * warm-up (``warmup_steps`` batches): β = β0, margins are collected; then
      ``τ = quantile_{1−δ}(warm-up margins)``;
    * after each later batch of n margins: ``τ ← (1−λ)τ + λ·quantile_{1−δ}(M)``,
      ``p̂ = mean(M ≥ τ)``, ``u = (p̂ − δ)/sqrt(δ(1−δ)/n)`` (a z-score of the exceedance rate),
      ``s = tanh(γu)``, ``β ← clip(β·exp(α·s), β_min, β_max)``.

    More pairs than expected far above τ (the policy is pulling away from the reference fast)
    raises β, i.e. strengthens the KL anchor; fewer lowers it. The batch's loss uses the β from
    *before* its update, so ``step`` returns the current β and then updates.

    Args:
        beta: β0. delta: δ, the target exceedance rate. momentum: λ, threshold smoothing.
        alpha: α, log-step size of β. gamma: γ, gain of the z-score. beta_min, beta_max: clip.
        warmup_steps: batches before the controller starts.
    """

    def __init__(
        self,
        beta: float = 0.1,
        delta: float = 0.1,
        momentum: float = 0.05,
        alpha: float = 0.005,
        gamma: float = 2.0,
        beta_min: float = 0.0,
        beta_max: float = 2.0,
        warmup_steps: int = 120,
    ):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if not 0 <= beta_min <= beta <= beta_max:
            raise ValueError(f"need 0 <= beta_min <= beta <= beta_max, got {beta_min}, {beta}, {beta_max}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.delta, self.momentum, self.alpha, self.gamma = float(delta), float(momentum), float(alpha), float(gamma)
        self.beta_min, self.beta_max, self.warmup_steps = float(beta_min), float(beta_max), int(warmup_steps)
        self.beta = float(beta)
        self.tau: float | None = None
        self.num_updates = 0
        self.last_exceedance: float | None = None
        self._warmup_margins: list[float] = []

    def step(self, margins: torch.Tensor, generator: torch.Generator | None = None) -> tuple[float, torch.Tensor]:
        beta = self.beta  # this batch's loss uses β from before the update
        margins = _check_margins(margins)
        self.update(margins)
        return beta, _keep_all(margins)

    def update(self, margins: torch.Tensor) -> None:
        margins = _check_margins(margins)
        q = 1 - self.delta
        self.num_updates += 1
        if self.num_updates <= self.warmup_steps:
            self._warmup_margins.extend(margins.tolist())
            if self.num_updates == self.warmup_steps:
                self.tau = torch.quantile(torch.tensor(self._warmup_margins), q).item()
                self._warmup_margins = []
            return
        batch_quantile = torch.quantile(margins, q).item()
        self.tau = batch_quantile if self.tau is None else (1 - self.momentum) * self.tau + self.momentum * batch_quantile
        n = margins.numel()
        exceedance = (margins >= self.tau).float().mean().item()  # p̂
        z = (exceedance - self.delta) / math.sqrt(self.delta * (1 - self.delta) / n)
        self.beta = min(self.beta_max, max(self.beta_min, self.beta * math.exp(self.alpha * math.tanh(self.gamma * z))))
        self.last_exceedance = exceedance

    def state_dict(self) -> dict:
        return {
            "beta": self.beta,
            "tau": self.tau,
            "num_updates": self.num_updates,
            "last_exceedance": self.last_exceedance,
            "warmup_margins": list(self._warmup_margins),
        }

    def load_state_dict(self, state: dict) -> None:
        self.beta, self.tau = float(state["beta"]), state["tau"]
        self.num_updates, self.last_exceedance = int(state["num_updates"]), state["last_exceedance"]
        self._warmup_margins = list(state["warmup_margins"])
