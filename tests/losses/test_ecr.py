"""Sinkhorn ECR, worked by hand and against a plain reference loop."""

import math

import pytest
import torch

from posttrain.losses.ecr import ecr_loss, sinkhorn_plan


def reference_sinkhorn(cost, epsilon, iterations):
    """The textbook iterations, one scalar at a time, for a fixed number of iterations."""
    rows, cols = len(cost), len(cost[0])
    kernel = [[math.exp(-c / epsilon) for c in row] for row in cost]
    u, v = [1 / rows] * rows, [1.0] * cols
    for _ in range(iterations):
        v = [(1 / cols) / sum(kernel[i][j] * u[i] for i in range(rows)) for j in range(cols)]
        u = [(1 / rows) / sum(kernel[i][j] * v[j] for j in range(cols)) for i in range(rows)]
    return [[u[i] * kernel[i][j] * v[j] for j in range(cols)] for i in range(rows)]


def test_one_topic_spreads_its_mass_evenly_so_the_loss_is_the_mean_cost():
    cost = torch.tensor([[0.2, 0.6, 0.8, 0.4]], dtype=torch.float64)
    plan, _ = sinkhorn_plan(cost, stop_threshold=1e-12)
    assert torch.allclose(plan, torch.full((1, 4), 0.25, dtype=torch.float64))
    assert ecr_loss(cost, stop_threshold=1e-12).item() == pytest.approx((0.2 + 0.6 + 0.8 + 0.4) / 4)


def test_a_word_far_from_every_topic_gets_less_than_its_mass_as_in_the_papers_code():
    # exp(-3.0 / 0.05) = 8.8e-27 is far below the 1e-16 guard, so the far word's column cannot
    # reach 1/4; everything stays finite
    plan, _ = sinkhorn_plan(torch.tensor([[0.2, 1.0, 3.0, 0.4]], dtype=torch.float64), stop_threshold=1e-12)
    assert plan[0, 2] < 0.25 and torch.isfinite(plan).all()


def test_two_by_two_with_a_cheap_diagonal():
    # symmetric cost: by symmetry π = [[p, q], [q, p]] with p + q = 1/2 and p/q = exp(1/ε)
    epsilon = 0.5
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    plan, _ = sinkhorn_plan(cost, epsilon=epsilon, stop_threshold=1e-12)
    ratio = math.exp(1 / epsilon)
    q = 0.5 / (1 + ratio)
    assert torch.allclose(plan, torch.tensor([[0.5 - q, q], [q, 0.5 - q]], dtype=torch.float64))
    assert ecr_loss(cost, epsilon=epsilon, stop_threshold=1e-12).item() == pytest.approx(2 * q)


def test_matches_the_reference_loop_and_meets_the_marginals():
    torch.manual_seed(0)
    cost = torch.rand(3, 5, dtype=torch.float64) * 2
    plan, iterations = sinkhorn_plan(cost, epsilon=0.2, max_iter=1000, stop_threshold=1e-9)
    expected = torch.tensor(reference_sinkhorn(cost.tolist(), 0.2, iterations - 1), dtype=torch.float64)
    assert torch.allclose(plan, expected, atol=1e-12)
    assert torch.allclose(plan.sum(1), torch.full((3,), 1 / 3, dtype=torch.float64))
    assert (plan.sum(0) - 1 / 5).abs().sum() < 1e-9


def test_stops_at_the_threshold_or_the_iteration_cap():
    torch.manual_seed(0)
    cost = torch.rand(4, 30)
    _, loose = sinkhorn_plan(cost, epsilon=0.05, stop_threshold=0.005)
    _, tight = sinkhorn_plan(cost, epsilon=0.05, stop_threshold=1e-6)
    assert 1 < loose < tight <= 1000
    plan, capped = sinkhorn_plan(cost, epsilon=0.05, max_iter=3, stop_threshold=0.0)
    assert capped == 3
    loose_plan, _ = sinkhorn_plan(cost, epsilon=0.05, stop_threshold=0.005)
    assert (loose_plan.sum(0) - 1 / 30).abs().sum() < 0.005  # within the threshold it stopped at


def test_gradient_flows_to_the_cost_and_pulls_matched_pairs_together():
    torch.manual_seed(0)
    topics = torch.randn(3, 4, requires_grad=True)
    words = torch.randn(12, 4)
    loss = ecr_loss(torch.cdist(topics, words) ** 2)
    loss.backward()
    assert topics.grad is not None and torch.isfinite(topics.grad).all() and topics.grad.abs().sum() > 0
    with torch.no_grad():
        moved = topics - 0.01 * topics.grad
    assert ecr_loss(torch.cdist(moved, words) ** 2) < loss


def test_underflowing_kernel_stays_finite():
    cost = torch.tensor([[0.0, 50.0], [50.0, 0.0], [25.0, 25.0]])
    plan, _ = sinkhorn_plan(cost, epsilon=0.05)
    assert torch.isfinite(plan).all()
