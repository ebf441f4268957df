"""Embedding Clustering Regularization (ECR), Wu et al. ICML 2023 (https://arxiv.org/abs/2306.04217).

ECRTM treats topic embeddings as cluster centres of word embeddings. ECR is the entropic optimal
transport cost between the topics (uniform mass 1/K each) and the words (uniform mass 1/V each)
with the squared Euclidean distance as cost (paper eq. 6-8):

    π* = argmin_π  Σ_kv π_kv C_kv − ε H(π)   s.t.  π 1_V = 1_K / K,  πᵀ 1_K = 1_V / V
    L_ECR = Σ_kv π*_kv C_kv

π* comes from Sinkhorn's iterations on the kernel G = exp(−C / ε): alternately rescale rows and
columns, ``v = b / (Gᵀu)``, ``u = a / (G v)``, until the column marginals of
``π = diag(u) G diag(v)`` are within ``stop_threshold`` (L1) of ``b``. Gradients flow through
the iterations (as in the paper's code). Shapes: ``cost`` (K, V).
"""

from __future__ import annotations

import torch

# Added to every divisor, as in the paper's code. It keeps values and gradients finite where the
# kernel underflows (a word far from every topic), at the price of giving such a word less than
# its 1/V mass: the plan is exact only where masses are well above 1e-16.
_GUARD = 1e-16

def sinkhorn_plan(
    cost: torch.Tensor, epsilon: float = 1 / 20, max_iter: int = 1000, stop_threshold: float = 0.005
) -> tuple[torch.Tensor, int]:
    """The entropic transport plan (K, V) between uniform marginals, and the iterations used.

    Stops as soon as the column marginals are within ``stop_threshold`` in L1 (checked every
    iteration at the cost of an elementwise op: ``Gᵀu`` is needed for the next update anyway).
    """
    num_rows, num_cols = cost.shape
    a = cost.new_full((num_rows,), 1.0 / num_rows)
    b = cost.new_full((num_cols,), 1.0 / num_cols)
    kernel = torch.exp(-cost / epsilon)
    u = a.clone()
    v = torch.ones_like(b)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        column_mass = kernel.T @ u  # (V,)
        if iterations > 1 and torch.sum(torch.abs(v * column_mass - b)) < stop_threshold:
            break
        v = b / (column_mass + _GUARD)
        u = a / (kernel @ v + _GUARD)
    plan = u[:, None] * kernel * v[None, :]
    return plan, iterations


def ecr_loss(
    cost: torch.Tensor, epsilon: float = 1 / 20, max_iter: int = 1000, stop_threshold: float = 0.005
) -> torch.Tensor:
    """``Σ π* ⊙ cost`` (a scalar), the transport cost of the Sinkhorn plan (unweighted)."""
    plan, _ = sinkhorn_plan(cost, epsilon, max_iter, stop_threshold)
    return torch.sum(plan * cost)
