"""self_distillation_loss / divergence against values worked out independently.

Expectations come from the formulas in the module docstring, evaluated by hand with the math
module on tiny vocabularies or by straightforward per-token loops in plain Python (``_ref_*``
below); the functions under test are never used to produce an expected value.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.testing import assert_close

from posttrain.losses import self_distillation_loss
from posttrain.losses.self_distillation import TAIL_CLAMP, _with_tail, divergence

F64 = torch.float64
TOL = {"rtol": 1e-6, "atol": 1e-7}


# --------------------------------------------------------------------------------------------
# independent reference: plain Python on lists of probabilities
# --------------------------------------------------------------------------------------------


def _kl(p: list[float], q: list[float]) -> float:
    """KL(p ‖ q) = Σ p log(p / q), by hand."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _ref_div(s: list[float], t: list[float], alpha: float) -> float:
    """The docstring's α-divergence on probability lists."""
    if alpha == 0.0:
        return _kl(t, s)
    if alpha == 1.0:
        return _kl(s, t)
    m = [(1 - alpha) * si + alpha * ti for si, ti in zip(s, t)]
    return (1 - alpha) * _kl(s, m) + alpha * _kl(t, m)


def _ref_topk_dist(log_probs: list[float], add_tail: bool) -> list[float]:
    """Top-k log-probs -> the distribution the docstring says is compared."""
    probs = [math.exp(lp) for lp in log_probs]
    total = sum(probs)
    if add_tail:
        # rest-of-vocabulary mass, at least 1 - exp(TAIL_CLAMP) ≈ 1e-7
        return probs + [max(1.0 - total, -math.expm1(-1e-7))]
    return [p / total for p in probs]


def _ref_loss(
    student_lp,
    teacher_lp,
    response_mask,
    student_topk=None,
    teacher_topk=None,
    alpha=1.0,
    is_clip=2.0,
    add_tail=True,
    old_lp=None,
    sample_mask=None,
):
    """Per-token loop: returns (loss, n_tokens, per-token importance weights)."""
    total, n = 0.0, 0.0
    weights = []
    for b in range(len(student_lp)):
        row = []
        for i in range(len(student_lp[b])):
            m = float(response_mask[b][i]) * (1.0 if sample_mask is None else float(sample_mask[b]))
            if student_topk is not None:
                s = _ref_topk_dist(student_topk[b][i], add_tail)
                t = _ref_topk_dist(teacher_topk[b][i], add_tail)
                d = _ref_div(s, t, alpha)
            else:
                d = (student_lp[b][i] - teacher_lp[b][i]) * student_lp[b][i]
            w = 1.0
            if old_lp is not None and is_clip is not None:  # no clip: no importance correction
                w = min(math.exp(min(max(student_lp[b][i] - old_lp[b][i], -20.0), 20.0)), is_clip)
            row.append(w)
            total += m * w * d
            n += m
        weights.append(row)
    return total / max(n, 1.0), n, weights


def _logs(probs: list[float], dtype=F64) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs], dtype=dtype)


def _rand_dist(rng: random.Random, v: int) -> list[float]:
    w = [rng.uniform(0.05, 1.0) for _ in range(v)]
    z = sum(w)
    return [x / z for x in w]


# --------------------------------------------------------------------------------------------
# divergence on explicit distributions (vocabulary of 3)
# --------------------------------------------------------------------------------------------

S3 = [0.7, 0.2, 0.1]
T3 = [0.2, 0.5, 0.3]


def test_divergence_alpha0_is_forward_kl_by_hand():
    expected = 0.2 * math.log(0.2 / 0.7) + 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(0.3 / 0.1)
    got = divergence(_logs(S3), _logs(T3), 0.0)
    assert_close(got, torch.tensor(expected, dtype=F64), **TOL)
    # and it is not the reverse KL
    reverse = 0.7 * math.log(0.7 / 0.2) + 0.2 * math.log(0.2 / 0.5) + 0.1 * math.log(0.1 / 0.3)
    assert abs(got.item() - reverse) > 1e-2


def test_divergence_alpha1_is_reverse_kl_by_hand():
    expected = 0.7 * math.log(0.7 / 0.2) + 0.2 * math.log(0.2 / 0.5) + 0.1 * math.log(0.1 / 0.3)
    got = divergence(_logs(S3), _logs(T3), 1.0)
    assert_close(got, torch.tensor(expected, dtype=F64), **TOL)


def test_divergence_alpha_half_is_jsd_by_hand():
    m = [0.45, 0.35, 0.2]  # (S3 + T3) / 2
    kl_sm = 0.7 * math.log(0.7 / 0.45) + 0.2 * math.log(0.2 / 0.35) + 0.1 * math.log(0.1 / 0.2)
    kl_tm = 0.2 * math.log(0.2 / 0.45) + 0.5 * math.log(0.5 / 0.35) + 0.3 * math.log(0.3 / 0.2)
    expected = 0.5 * kl_sm + 0.5 * kl_tm
    assert abs(sum(m) - 1.0) < 1e-12
    got = divergence(_logs(S3), _logs(T3), 0.5)
    assert_close(got, torch.tensor(expected, dtype=F64), **TOL)


def test_divergence_alpha_quarter_is_skewed_jsd_by_hand():
    # m = 0.75·s + 0.25·t
    m = [0.75 * 0.7 + 0.25 * 0.2, 0.75 * 0.2 + 0.25 * 0.5, 0.75 * 0.1 + 0.25 * 0.3]  # [0.575, 0.275, 0.15]
    kl_sm = sum(p * math.log(p / q) for p, q in zip(S3, m))
    kl_tm = sum(p * math.log(p / q) for p, q in zip(T3, m))
    expected = 0.75 * kl_sm + 0.25 * kl_tm
    got = divergence(_logs(S3), _logs(T3), 0.25)
    assert_close(got, torch.tensor(expected, dtype=F64), **TOL)
    # skew direction matters: α = 0.75 is a different number
    assert abs(divergence(_logs(S3), _logs(T3), 0.75).item() - expected) > 1e-3


def test_divergence_batched_positions_match_reference():
    rng = random.Random(0)
    s = [[_rand_dist(rng, 4) for _ in range(3)] for _ in range(2)]
    t = [[_rand_dist(rng, 4) for _ in range(3)] for _ in range(2)]
    s_lp = torch.tensor(s, dtype=F64).log()
    t_lp = torch.tensor(t, dtype=F64).log()
    for alpha in (0.0, 0.3, 0.5, 1.0):
        got = divergence(s_lp, t_lp, alpha)
        assert got.shape == (2, 3)
        expected = torch.tensor([[_ref_div(s[b][i], t[b][i], alpha) for i in range(3)] for b in range(2)], dtype=F64)
        assert_close(got, expected, **TOL)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
def test_divergence_zero_when_student_equals_teacher(alpha):
    lp = _logs(S3, dtype=torch.float32)
    got = divergence(lp, lp.clone(), alpha)
    assert abs(got.item()) < 1e-6


@pytest.mark.parametrize("alpha", [0.25, 0.7, 0.9])
def test_divergence_float64_identical_is_zero_to_float64_precision(alpha):
    lp = _logs([0.2, 0.3, 0.5])
    got = divergence(lp, lp.clone(), alpha)
    assert abs(got.item()) < 1e-12


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_divergence_non_negative(alpha):
    rng = random.Random(1)
    s = torch.tensor([_rand_dist(rng, 5) for _ in range(20)], dtype=F64).log()
    t = torch.tensor([_rand_dist(rng, 5) for _ in range(20)], dtype=F64).log()
    got = divergence(s, t, alpha)
    assert got.shape == (20,)
    assert torch.isfinite(got).all()
    assert (got >= 0).all()
    assert (got > 1e-6).any()


def test_jsd_bounded_by_log2_for_nearly_disjoint():
    e = 1e-6
    s = [1 - 2 * e, e, e]
    t = [e, e, 1 - 2 * e]
    got = divergence(_logs(s), _logs(t), 0.5).item()
    assert got <= math.log(2) + 1e-12
    assert got == pytest.approx(math.log(2), abs=1e-4)
    assert got == pytest.approx(_ref_div(s, t, 0.5), rel=1e-6)


def test_skewed_jsd_bounded_by_binary_entropy():
    # D_α = H(m) − (1−α)H(s) − αH(t) ≤ H_b(α) = −α log α − (1−α) log(1−α)
    e = 1e-6
    s = [1 - 2 * e, e, e]
    t = [e, e, 1 - 2 * e]
    alpha = 0.25
    bound = -alpha * math.log(alpha) - (1 - alpha) * math.log(1 - alpha)
    got = divergence(_logs(s), _logs(t), alpha).item()
    assert got <= bound + 1e-12
    assert got == pytest.approx(bound, abs=1e-4)


def test_jsd_exactly_disjoint_is_log2():
    s = torch.tensor([math.log(0.5), math.log(0.5), float("-inf")], dtype=F64)
    t = torch.tensor([float("-inf"), float("-inf"), 0.0], dtype=F64)
    got = divergence(s, t, 0.5)
    assert_close(got, torch.tensor(math.log(2), dtype=F64))


# --------------------------------------------------------------------------------------------
# top-k mode
# --------------------------------------------------------------------------------------------

# one position, V = 5; the student's top-2 are tokens 0 and 1
S5 = [0.4, 0.3, 0.15, 0.1, 0.05]
T5 = [0.25, 0.35, 0.1, 0.2, 0.1]


def _one_pos(values: list[float], dtype=F64) -> torch.Tensor:
    """(1, 1, K) log-probs."""
    return _logs(values, dtype=dtype).view(1, 1, -1)


def _dummy_bt(b=1, t=1, dtype=F64):
    return torch.zeros(b, t, dtype=dtype), torch.zeros(b, t, dtype=dtype), torch.ones(b, t, dtype=dtype)


def test_with_tail_bucket_is_log_rest_mass_by_hand():
    x = torch.stack([_logs(S5[:2]), _logs(T5[:2])])  # (2, 2)
    out = _with_tail(x)
    assert out.shape == (2, 3)
    assert_close(out[:, :2], x)
    assert_close(out[:, 2], torch.tensor([math.log(0.3), math.log(0.4)], dtype=F64), **TOL)


@pytest.mark.parametrize(
    "alpha,expected",
    [
        # s = [0.4, 0.3 | tail 0.3], t = [0.25, 0.35 | tail 0.4]
        (0.0, 0.25 * math.log(0.25 / 0.4) + 0.35 * math.log(0.35 / 0.3) + 0.4 * math.log(0.4 / 0.3)),
        (1.0, 0.4 * math.log(0.4 / 0.25) + 0.3 * math.log(0.3 / 0.35) + 0.3 * math.log(0.3 / 0.4)),
        (
            0.5,
            0.5 * (0.4 * math.log(0.4 / 0.325) + 0.3 * math.log(0.3 / 0.325) + 0.3 * math.log(0.3 / 0.35))
            + 0.5 * (0.25 * math.log(0.25 / 0.325) + 0.35 * math.log(0.35 / 0.325) + 0.4 * math.log(0.4 / 0.35)),
        ),
    ],
)
def test_topk_with_tail_k_less_than_v_by_hand(alpha, expected):
    slp, tlp, mask = _dummy_bt()
    loss, metrics = self_distillation_loss(
        slp, tlp, mask, _one_pos(S5[:2]), _one_pos(T5[:2]), alpha=alpha, add_tail=True
    )
    assert loss.shape == ()
    assert_close(loss, torch.tensor(expected, dtype=F64), **TOL)
    assert metrics["divergence"] == pytest.approx(expected, rel=1e-6)
    assert metrics["distill_tokens"] == 1.0


@pytest.mark.parametrize(
    "alpha,expected",
    [
        # s = [4/7, 3/7], t = [5/12, 7/12]
        (0.0, 5 / 12 * math.log((5 / 12) / (4 / 7)) + 7 / 12 * math.log((7 / 12) / (3 / 7))),
        (1.0, 4 / 7 * math.log((4 / 7) / (5 / 12)) + 3 / 7 * math.log((3 / 7) / (7 / 12))),
        (
            0.5,
            0.5 * (4 / 7 * math.log((4 / 7) / (83 / 168)) + 3 / 7 * math.log((3 / 7) / (85 / 168)))
            + 0.5 * (5 / 12 * math.log((5 / 12) / (83 / 168)) + 7 / 12 * math.log((7 / 12) / (85 / 168))),
        ),
    ],
)
def test_topk_without_tail_renormalises_by_hand(alpha, expected):
    # mixture at α = 0.5: (4/7 + 5/12)/2 = 83/168, (3/7 + 7/12)/2 = 85/168
    slp, tlp, mask = _dummy_bt()
    loss, _ = self_distillation_loss(
        slp, tlp, mask, _one_pos(S5[:2]), _one_pos(T5[:2]), alpha=alpha, add_tail=False
    )
    assert_close(loss, torch.tensor(expected, dtype=F64), **TOL)


def test_topk_with_and_without_tail_differ():
    slp, tlp, mask = _dummy_bt()
    a, _ = self_distillation_loss(slp, tlp, mask, _one_pos(S5[:2]), _one_pos(T5[:2]), alpha=0.5, add_tail=True)
    b, _ = self_distillation_loss(slp, tlp, mask, _one_pos(S5[:2]), _one_pos(T5[:2]), alpha=0.5, add_tail=False)
    assert abs(a.item() - b.item()) > 1e-3


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 1.0])
def test_topk_k_equals_v_tail_negligible_equals_full_divergence(alpha):
    rng = random.Random(2)
    s = [[_rand_dist(rng, 6) for _ in range(3)] for _ in range(2)]
    t = [[_rand_dist(rng, 6) for _ in range(3)] for _ in range(2)]
    s_lp = torch.tensor(s, dtype=torch.float32).log()
    t_lp = torch.tensor(t, dtype=torch.float32).log()
    slp, tlp, mask = _dummy_bt(2, 3, torch.float32)
    loss, _ = self_distillation_loss(slp, tlp, mask, s_lp, t_lp, alpha=alpha, add_tail=True)
    expected = sum(_ref_div(s[b][i], t[b][i], alpha) for b in range(2) for i in range(3)) / 6
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected, abs=2e-6, rel=1e-4)
    # the appended bucket holds ~0 mass (at most ~1e-7 after the clamp)
    tail = _with_tail(s_lp)[..., -1].exp()
    assert (tail <= 1e-6).all()


def test_tail_clamp_keeps_full_mass_finite():
    # probabilities exactly representable in float and summing to exactly 1
    probs = [0.5, 0.25, 0.125, 0.125]
    s_lp = torch.tensor(probs, dtype=torch.float32).log().view(1, 1, 4).requires_grad_(True)
    t_lp = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float32).log().view(1, 1, 4)
    out = _with_tail(s_lp.detach())
    # tail = log(1 - exp(TAIL_CLAMP)) = log(-expm1(-1e-7)) ≈ log(1e-7)
    assert TAIL_CLAMP == -1e-7
    assert out[..., -1].item() == pytest.approx(math.log(-math.expm1(-1e-7)), abs=1e-3)
    assert out[..., -1].item() == pytest.approx(math.log(1e-7), abs=1e-3)
    slp, tlp, mask = _dummy_bt(dtype=torch.float32)
    for alpha in (0.0, 0.5, 1.0):
        loss, metrics = self_distillation_loss(slp, tlp, mask, s_lp, t_lp, alpha=alpha, add_tail=True)
        assert torch.isfinite(loss)
        assert math.isfinite(metrics["divergence"])
        expected = _ref_div(probs, [0.25] * 4, alpha)
        assert loss.item() == pytest.approx(expected, abs=1e-5)
        s_lp.grad = None
        loss.backward()
        assert torch.isfinite(s_lp.grad).all()


def test_tail_clamp_keeps_over_full_mass_finite():
    # top-k "probabilities" summing to more than 1 (rounding): log(1 - mass) would be NaN unclamped
    s_lp = torch.tensor([[[math.log(0.6), math.log(0.5)]]], dtype=torch.float32, requires_grad=True)
    t_lp = torch.tensor([[[math.log(0.7), math.log(0.4)]]], dtype=torch.float32)
    out = _with_tail(s_lp.detach())
    assert torch.isfinite(out).all()
    slp, tlp, mask = _dummy_bt(dtype=torch.float32)
    loss, _ = self_distillation_loss(slp, tlp, mask, s_lp, t_lp, alpha=0.5, add_tail=True)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s_lp.grad).all()


# --------------------------------------------------------------------------------------------
# sampled-token mode
# --------------------------------------------------------------------------------------------

SLP = [[-0.5, -1.2, -2.0], [-0.1, -3.0, -0.7]]
TLP = [[-0.9, -0.4, -2.5], [-0.3, -1.0, -0.2]]


def test_sampled_token_value_by_hand():
    mask = [[1, 1, 0], [1, 0, 1]]
    s = torch.tensor(SLP, dtype=F64)
    t = torch.tensor(TLP, dtype=F64)
    loss, metrics = self_distillation_loss(s, t, torch.tensor(mask, dtype=F64), alpha=1.0)
    expected = (
        (-0.5 - -0.9) * -0.5 + (-1.2 - -0.4) * -1.2 + (-0.1 - -0.3) * -0.1 + (-0.7 - -0.2) * -0.7
    ) / 4
    assert_close(loss, torch.tensor(expected, dtype=F64), **TOL)
    assert metrics["distill_tokens"] == 4.0
    assert metrics["divergence"] == pytest.approx(expected, rel=1e-9)


def test_sampled_token_gradient_detaches_ratio():
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=F64)
    s = torch.tensor(SLP, dtype=F64, requires_grad=True)
    t = torch.tensor(TLP, dtype=F64, requires_grad=True)
    loss, _ = self_distillation_loss(s, t, mask, alpha=1.0)
    loss.backward()
    expected = [
        [(SLP[b][i] - TLP[b][i]) / 4 if mask[b, i] else 0.0 for i in range(3)] for b in range(2)
    ]
    assert_close(s.grad, torch.tensor(expected, dtype=F64), **TOL)
    # without the detach the gradient would be (2 log s − log t) / n: make sure it differs here
    assert abs(s.grad[0, 0].item() - (2 * -0.5 - -0.9) / 4) > 1e-2
    assert t.grad is None


def test_sampled_token_default_alpha_raises():
    s, t, mask = _dummy_bt()
    with pytest.raises(ValueError, match="alpha"):
        self_distillation_loss(s, t, mask)  # default alpha = 0.5


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.999])
def test_sampled_token_alpha_not_one_raises(alpha):
    s, t, mask = _dummy_bt()
    with pytest.raises(ValueError, match="alpha"):
        self_distillation_loss(s, t, mask, alpha=alpha)


@pytest.mark.parametrize("which", ["student", "teacher"])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_only_one_topk_tensor_raises(which, alpha):
    s, t, mask = _dummy_bt()
    topk = _one_pos([0.5, 0.3])
    kwargs = {"student_topk_log_probs": topk} if which == "student" else {"teacher_topk_log_probs": topk}
    with pytest.raises(ValueError, match="both"):
        self_distillation_loss(s, t, mask, alpha=alpha, **kwargs)


@pytest.mark.parametrize("alpha", [-0.1, 1.0001, 2.0, float("nan")])
@pytest.mark.parametrize("topk", [False, True])
def test_alpha_out_of_range_raises(alpha, topk):
    s, t, mask = _dummy_bt()
    kwargs = {}
    if topk:
        kwargs = {"student_topk_log_probs": _one_pos([0.5, 0.3]), "teacher_topk_log_probs": _one_pos([0.4, 0.4])}
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        self_distillation_loss(s, t, mask, alpha=alpha, **kwargs)


# --------------------------------------------------------------------------------------------
# gradients in top-k mode
# --------------------------------------------------------------------------------------------


def _ref_topk_loss_torch(s_topk: torch.Tensor, t_topk: list, mask: list, alpha: float, add_tail: bool, w=None):
    """Explicit per-position loop with scalar torch ops (for autograd of the reference)."""
    total = s_topk.new_zeros(())
    n = 0.0
    B, T, K = s_topk.shape
    for b in range(B):
        for i in range(T):
            if not mask[b][i]:
                continue
            sp = [s_topk[b, i, k].exp() for k in range(K)]
            tp = [math.exp(t_topk[b][i][k]) for k in range(K)]
            if add_tail:
                sp = sp + [1 - sum(sp)]
                tp = tp + [1 - sum(tp)]
            else:
                zs = sum(sp)
                sp = [p / zs for p in sp]
                zt = sum(tp)
                tp = [p / zt for p in tp]
            if alpha == 0.0:
                d = sum(tq * (math.log(tq) - sq.log()) for sq, tq in zip(sp, tp))
            elif alpha == 1.0:
                d = sum(sq * (sq.log() - math.log(tq)) for sq, tq in zip(sp, tp))
            else:
                m = [(1 - alpha) * sq + alpha * tq for sq, tq in zip(sp, tp)]
                d = (1 - alpha) * sum(sq * (sq.log() - mq.log()) for sq, mq in zip(sp, m)) + alpha * sum(
                    tq * (math.log(tq) - mq.log()) for tq, mq in zip(tp, m)
                )
            total = total + (1.0 if w is None else w[b][i]) * d
            n += 1
    return total / max(n, 1.0)


TOPK_S = [[[0.4, 0.3, 0.1], [0.5, 0.2, 0.05]], [[0.6, 0.1, 0.1], [0.3, 0.3, 0.2]]]
TOPK_T = [[[0.2, 0.3, 0.3], [0.1, 0.4, 0.2]], [[0.5, 0.2, 0.05], [0.25, 0.25, 0.25]]]
TOPK_MASK = [[1, 1], [1, 0]]


@pytest.mark.parametrize("add_tail", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_topk_gradients_flow_to_student_only(alpha, add_tail):
    s_topk = torch.tensor(TOPK_S, dtype=F64).log().requires_grad_(True)
    t_topk = torch.tensor(TOPK_T, dtype=F64).log().requires_grad_(True)
    slp = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    tlp = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    mask = torch.tensor(TOPK_MASK, dtype=F64)
    loss, _ = self_distillation_loss(slp, tlp, mask, s_topk, t_topk, alpha=alpha, add_tail=add_tail)
    loss.backward()
    assert t_topk.grad is None
    assert tlp.grad is None
    assert s_topk.grad is not None and torch.isfinite(s_topk.grad).all()
    assert s_topk.grad.abs().sum() > 1e-4
    assert (s_topk.grad[1, 1] == 0).all()  # masked position

    ref_s = torch.tensor(TOPK_S, dtype=F64).log().requires_grad_(True)
    t_vals = torch.tensor(TOPK_T, dtype=F64).log().tolist()
    ref = _ref_topk_loss_torch(ref_s, t_vals, TOPK_MASK, alpha, add_tail)
    ref.backward()
    assert_close(loss.detach(), ref.detach(), **TOL)
    assert_close(s_topk.grad, ref_s.grad, **TOL)


# --------------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------------


def test_response_mask_excludes_tokens_unequal_lengths():
    # sample 0 has 3 response tokens, sample 1 has 1
    s = torch.tensor([[-0.5, -1.0, -0.2, -4.0], [-2.0, -9.0, -9.0, -9.0]], dtype=F64)
    t = torch.tensor([[-0.1, -1.5, -0.3, -0.1], [-1.0, -0.1, -0.1, -0.1]], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=F64)
    loss, metrics = self_distillation_loss(s, t, mask, alpha=1.0)
    terms = [(-0.5 + 0.1) * -0.5, (-1.0 + 1.5) * -1.0, (-0.2 + 0.3) * -0.2, (-2.0 + 1.0) * -2.0]
    expected = sum(terms) / 4  # token mean, not the mean of per-sample means
    per_sample_mean = (sum(terms[:3]) / 3 + terms[3]) / 2
    assert abs(expected - per_sample_mean) > 1e-2
    assert_close(loss, torch.tensor(expected, dtype=F64), **TOL)
    assert metrics["distill_tokens"] == 4.0


def test_masked_positions_do_not_affect_loss():
    s = torch.tensor([[-0.5, -1.0, -0.2]], dtype=F64)
    t = torch.tensor([[-0.1, -1.5, -0.3]], dtype=F64)
    mask = torch.tensor([[1, 0, 1]], dtype=F64)
    a, _ = self_distillation_loss(s, t, mask, alpha=1.0)
    s2, t2 = s.clone(), t.clone()
    s2[0, 1], t2[0, 1] = -7.0, -0.01
    b, _ = self_distillation_loss(s2, t2, mask, alpha=1.0)
    assert_close(a, b)
    assert a.item() == pytest.approx(((-0.5 + 0.1) * -0.5 + (-0.2 + 0.3) * -0.2) / 2, rel=1e-9)


def test_sample_mask_excludes_whole_samples():
    s = torch.tensor([[-0.5, -1.0], [-2.0, -0.3], [-0.7, -0.9]], dtype=F64, requires_grad=True)
    t = torch.tensor([[-0.1, -1.5], [-1.0, -0.1], [-0.2, -2.0]], dtype=F64)
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]], dtype=F64)
    sample_mask = torch.tensor([1.0, 0.0, 1.0], dtype=F64)
    loss, metrics = self_distillation_loss(s, t, mask, alpha=1.0, sample_mask=sample_mask)
    terms = [(-0.5 + 0.1) * -0.5, (-1.0 + 1.5) * -1.0, (-0.7 + 0.2) * -0.7]
    assert_close(loss, torch.tensor(sum(terms) / 3, dtype=F64), **TOL)
    assert metrics["distill_tokens"] == 3.0
    loss.backward()
    assert (s.grad[1] == 0).all()
    assert s.grad[2, 1] == 0
    assert s.grad[0, 0].item() == pytest.approx((-0.5 + 0.1) / 3)


def test_sample_mask_bool_and_topk_mode():
    s_topk = torch.tensor(TOPK_S, dtype=F64).log()
    t_topk = torch.tensor(TOPK_T, dtype=F64).log()
    slp, tlp, _ = _dummy_bt(2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    loss, metrics = self_distillation_loss(
        slp, tlp, mask, s_topk, t_topk, alpha=0.5, sample_mask=torch.tensor([False, True])
    )
    expected = _ref_div(_ref_topk_dist(s_topk[1, 0].tolist(), True), _ref_topk_dist(t_topk[1, 0].tolist(), True), 0.5)
    assert metrics["distill_tokens"] == 1.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("topk", [False, True])
def test_all_masked_gives_zero_without_nan(topk):
    s = torch.tensor([[-0.5, -1.0]], dtype=F64, requires_grad=True)
    t = torch.tensor([[-0.1, -1.5]], dtype=F64)
    kwargs = {"alpha": 1.0}
    s_topk = None
    if topk:
        s_topk = torch.tensor([[[0.4, 0.3], [0.5, 0.2]]], dtype=F64).log().requires_grad_(True)
        kwargs = {
            "alpha": 0.5,
            "student_topk_log_probs": s_topk,
            "teacher_topk_log_probs": torch.tensor([[[0.2, 0.3], [0.1, 0.4]]], dtype=F64).log(),
        }
    for mask, sample_mask in [
        (torch.zeros(1, 2, dtype=F64), None),
        (torch.ones(1, 2, dtype=F64), torch.zeros(1, dtype=F64)),
    ]:
        loss, metrics = self_distillation_loss(
            s, t, mask, old_log_probs=torch.tensor([[-0.4, -2.0]], dtype=F64), sample_mask=sample_mask, **kwargs
        )
        assert loss.item() == 0.0
        assert not torch.isnan(loss)
        assert metrics["distill_tokens"] == 0.0
        assert all(math.isfinite(v) for v in metrics.values())
        assert metrics["is_weight"] == 0.0
        assert metrics["is_clip_fraction"] == 0.0
        leaf = s_topk if topk else s
        leaf.grad = None
        loss.backward()
        assert torch.isfinite(leaf.grad).all() and (leaf.grad == 0).all()


# --------------------------------------------------------------------------------------------
# importance weights
# --------------------------------------------------------------------------------------------

# log s − log old = [log 3, log 0.5, log 1.5, log 2.5]
IS_S = [-0.5, -1.2, -0.8, -2.0]
IS_OLD = [-0.5 - math.log(3.0), -1.2 - math.log(0.5), -0.8 - math.log(1.5), -2.0 - math.log(2.5)]
IS_T = [-0.1, -0.7, -1.5, -1.0]


def test_importance_weight_value_and_metrics_by_hand():
    s = torch.tensor([IS_S], dtype=F64)
    t = torch.tensor([IS_T], dtype=F64)
    old = torch.tensor([IS_OLD], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 1]], dtype=F64)
    loss, metrics = self_distillation_loss(s, t, mask, alpha=1.0, is_clip=2.0, old_log_probs=old)
    w = [2.0, 0.5, 1.5, 2.0]  # min(r, 2)
    base = [(si - ti) * si for si, ti in zip(IS_S, IS_T)]
    expected = sum(wi * bi for wi, bi in zip(w, base)) / 4
    assert_close(loss, torch.tensor(expected, dtype=F64), **TOL)
    assert metrics["is_weight"] == pytest.approx(sum(w) / 4, rel=1e-9)  # 1.5
    assert metrics["is_clip_fraction"] == pytest.approx(2 / 4)  # 3 and 2.5 exceed 2
    assert metrics["distill_tokens"] == 4.0


def test_importance_metrics_respect_mask():
    s = torch.tensor([IS_S], dtype=F64)
    t = torch.tensor([IS_T], dtype=F64)
    old = torch.tensor([IS_OLD], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0]], dtype=F64)  # drop the r = 2.5 token
    loss, metrics = self_distillation_loss(s, t, mask, alpha=1.0, is_clip=2.0, old_log_probs=old)
    assert metrics["is_weight"] == pytest.approx((2.0 + 0.5 + 1.5) / 3, rel=1e-9)
    assert metrics["is_clip_fraction"] == pytest.approx(1 / 3)
    base = [(si - ti) * si for si, ti in zip(IS_S, IS_T)]
    assert loss.item() == pytest.approx((2.0 * base[0] + 0.5 * base[1] + 1.5 * base[2]) / 3, rel=1e-9)


def test_no_importance_correction_when_is_clip_none():
    # the reference code: is_clip None means no importance correction, not an unclipped ratio
    s = torch.tensor([IS_S], dtype=F64)
    t = torch.tensor([IS_T], dtype=F64)
    old = torch.tensor([IS_OLD], dtype=F64)
    mask = torch.ones(1, 4, dtype=F64)
    loss, metrics = self_distillation_loss(s, t, mask, alpha=1.0, is_clip=None, old_log_probs=old)
    base = [(si - ti) * si for si, ti in zip(IS_S, IS_T)]
    assert loss.item() == pytest.approx(sum(base) / 4, rel=1e-9)
    assert "is_weight" not in metrics and "is_clip_fraction" not in metrics


def test_huge_is_clip_leaves_ratio_unclipped():
    s = torch.tensor([IS_S], dtype=F64)
    t = torch.tensor([IS_T], dtype=F64)
    old = torch.tensor([IS_OLD], dtype=F64)
    loss, metrics = self_distillation_loss(s, t, torch.ones(1, 4, dtype=F64), alpha=1.0, is_clip=1e12, old_log_probs=old)
    w = [3.0, 0.5, 1.5, 2.5]
    base = [(si - ti) * si for si, ti in zip(IS_S, IS_T)]
    assert loss.item() == pytest.approx(sum(wi * bi for wi, bi in zip(w, base)) / 4, rel=1e-9)
    assert metrics["is_weight"] == pytest.approx(7.5 / 4, rel=1e-9)
    assert metrics["is_clip_fraction"] == 0.0


def test_no_old_log_probs_no_weight_metrics():
    s = torch.tensor([IS_S], dtype=F64)
    t = torch.tensor([IS_T], dtype=F64)
    loss, metrics = self_distillation_loss(s, t, torch.ones(1, 4, dtype=F64), alpha=1.0)
    assert "is_weight" not in metrics and "is_clip_fraction" not in metrics
    base = [(si - ti) * si for si, ti in zip(IS_S, IS_T)]
    assert loss.item() == pytest.approx(sum(base) / 4, rel=1e-9)


def test_importance_weight_is_detached_sampled_mode():
    s = torch.tensor([IS_S], dtype=F64, requires_grad=True)
    t = torch.tensor([IS_T], dtype=F64)
    old = torch.tensor([IS_OLD], dtype=F64, requires_grad=True)
    mask = torch.ones(1, 4, dtype=F64)
    loss, _ = self_distillation_loss(s, t, mask, alpha=1.0, is_clip=1e12, old_log_probs=old)
    loss.backward()
    w = [3.0, 0.5, 1.5, 2.5]
    expected = [wi * (si - ti) / 4 for wi, si, ti in zip(w, IS_S, IS_T)]
    assert_close(s.grad, torch.tensor([expected], dtype=F64), **TOL)
    assert old.grad is None


@pytest.mark.parametrize("add_tail", [True, False])
def test_importance_weight_is_detached_topk_mode(add_tail):
    s_topk = torch.tensor(TOPK_S, dtype=F64).log().requires_grad_(True)
    t_topk = torch.tensor(TOPK_T, dtype=F64).log()
    slp = torch.tensor([[-0.5, -1.0], [-0.3, -2.0]], dtype=F64, requires_grad=True)
    old = slp.detach() - torch.tensor([[math.log(3.0), math.log(0.5)], [math.log(1.5), 0.0]], dtype=F64)
    mask = torch.tensor(TOPK_MASK, dtype=F64)
    loss, metrics = self_distillation_loss(
        slp, torch.zeros(2, 2, dtype=F64), mask, s_topk, t_topk, alpha=0.5, is_clip=2.0,
        add_tail=add_tail, old_log_probs=old,
    )
    loss.backward()
    w = [[2.0, 0.5], [1.5, 1.0]]
    ref_s = torch.tensor(TOPK_S, dtype=F64).log().requires_grad_(True)
    ref = _ref_topk_loss_torch(ref_s, t_topk.tolist(), TOPK_MASK, 0.5, add_tail, w=w)
    ref.backward()
    assert_close(loss.detach(), ref.detach(), **TOL)
    assert_close(s_topk.grad, ref_s.grad, **TOL)
    # the ratio contributes no gradient: student_log_probs is only used inside it
    assert slp.grad is None or (slp.grad == 0).all()
    assert metrics["is_weight"] == pytest.approx((2.0 + 0.5 + 1.5) / 3, rel=1e-9)
    # (0,0) has r = 3 > 2, (0,1) 0.5, (1,0) 1.5, (1,1) masked -> one of three clipped
    assert metrics["is_clip_fraction"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("delta", [100.0, -100.0, 1000.0])
def test_importance_ratio_clamped_at_20(delta):
    s = torch.tensor([[-0.5]], dtype=F64, requires_grad=True)
    t = torch.tensor([[-0.1]], dtype=F64)
    old = torch.tensor([[-0.5 - delta]], dtype=F64)
    loss, metrics = self_distillation_loss(s, t, torch.ones(1, 1, dtype=F64), alpha=1.0, is_clip=1e12, old_log_probs=old)
    w = math.exp(20.0) if delta > 0 else math.exp(-20.0)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(w * (-0.5 + 0.1) * -0.5, rel=1e-9)
    assert metrics["is_weight"] == pytest.approx(w, rel=1e-9)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad.item() == pytest.approx(w * (-0.5 + 0.1), rel=1e-9)


def test_importance_ratio_clamp_float32_no_overflow():
    # exp(100) overflows float32; the clamp at 20 must keep it finite
    s = torch.tensor([[-0.5, -0.2]], dtype=torch.float32)
    t = torch.tensor([[-0.1, -0.3]], dtype=torch.float32)
    old = torch.tensor([[-100.5, -0.2]], dtype=torch.float32)
    loss, metrics = self_distillation_loss(s, t, torch.ones(1, 2), alpha=1.0, is_clip=1e12, old_log_probs=old)
    assert torch.isfinite(loss)
    assert math.isfinite(metrics["is_weight"])
    expected = (math.exp(20.0) * (-0.5 + 0.1) * -0.5 + (-0.2 + 0.3) * -0.2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss_c, metrics_c = self_distillation_loss(s, t, torch.ones(1, 2), alpha=1.0, is_clip=2.0, old_log_probs=old)
    assert loss_c.item() == pytest.approx((2.0 * (-0.5 + 0.1) * -0.5 + (-0.2 + 0.3) * -0.2) / 2, rel=1e-5)
    assert metrics_c["is_clip_fraction"] == pytest.approx(0.5)
    assert metrics_c["is_weight"] == pytest.approx(1.5, rel=1e-6)


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------


def _random_batch(B: int, T: int, K: int, seed: int):
    rng = random.Random(seed)
    slp = [[-rng.uniform(0.05, 3.0) for _ in range(T)] for _ in range(B)]
    tlp = [[-rng.uniform(0.05, 3.0) for _ in range(T)] for _ in range(B)]
    old = [[x + rng.uniform(-1.5, 1.5) for x in row] for row in slp]
    mask = [[1 if rng.random() < 0.7 else 0 for _ in range(T)] for _ in range(B)]
    mask[0][0] = 1
    sample_mask = [1] * B
    if B > 1:
        sample_mask[-1] = 0
    s_topk, t_topk = [], []
    for _ in range(B):
        s_row, t_row = [], []
        for _ in range(T):
            # full-vocabulary probabilities (V = K + 2); the student keeps its own top-k
            sf = _rand_dist(rng, K + 2)
            tf = _rand_dist(rng, K + 2)
            idx = sorted(range(K + 2), key=lambda j: -sf[j])[:K]
            s_row.append([math.log(sf[j]) for j in idx])
            t_row.append([math.log(tf[j]) for j in idx])
        s_topk.append(s_row)
        t_topk.append(t_row)
    return slp, tlp, old, mask, sample_mask, s_topk, t_topk


@pytest.mark.parametrize("B", [1, 2, 3])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_shapes_sampled_mode(B, T):
    slp, tlp, old, mask, sample_mask, _, _ = _random_batch(B, T, 3, seed=10 * B + T)
    s = torch.tensor(slp, dtype=F64, requires_grad=True)
    loss, metrics = self_distillation_loss(
        s, torch.tensor(tlp, dtype=F64), torch.tensor(mask, dtype=F64), alpha=1.0, is_clip=2.0,
        old_log_probs=torch.tensor(old, dtype=F64), sample_mask=torch.tensor(sample_mask, dtype=F64),
    )
    expected, n, _ = _ref_loss(slp, tlp, mask, old_lp=old, is_clip=2.0, sample_mask=sample_mask)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert metrics["distill_tokens"] == n
    assert all(isinstance(v, float) for v in metrics.values())
    loss.backward()
    assert s.grad.shape == (B, T)


@pytest.mark.parametrize("B", [1, 2, 3])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_shapes_topk_mode(B, T):
    K = 3
    slp, tlp, old, mask, sample_mask, s_topk, t_topk = _random_batch(B, T, K, seed=100 + 10 * B + T)
    st = torch.tensor(s_topk, dtype=F64, requires_grad=True)
    assert st.shape == (B, T, K)
    for alpha, add_tail in [(0.0, True), (0.5, True), (1.0, False), (0.3, False)]:
        st.grad = None
        loss, metrics = self_distillation_loss(
            torch.tensor(slp, dtype=F64), torch.tensor(tlp, dtype=F64), torch.tensor(mask, dtype=F64),
            st, torch.tensor(t_topk, dtype=F64), alpha=alpha, is_clip=2.0, add_tail=add_tail,
            old_log_probs=torch.tensor(old, dtype=F64), sample_mask=torch.tensor(sample_mask, dtype=F64),
        )
        expected, n, _ = _ref_loss(
            slp, tlp, mask, s_topk, t_topk, alpha=alpha, is_clip=2.0, add_tail=add_tail, old_lp=old,
            sample_mask=sample_mask,
        )
        assert loss.shape == ()
        assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12), (alpha, add_tail)
        assert metrics["distill_tokens"] == n
        loss.backward()
        assert st.grad.shape == (B, T, K)
        assert torch.isfinite(st.grad).all()


# -- chunked inputs: no (B, T, V) tensor, the same numbers -------------------------------------------


def unchunked_inputs(hidden, head, teacher_logits, completion_ids, topk):
    """The reference: full-vocabulary log-probs of every position at once, as SDPO computed them before."""
    student = torch.log_softmax(head(hidden).float(), dim=-1)  # (B, T, V)
    teacher = torch.log_softmax(teacher_logits.float(), dim=-1)
    sampled = completion_ids.unsqueeze(-1)
    indices = student.detach().topk(topk, dim=-1).indices if topk else None
    return {
        "student_log_probs": student.gather(-1, sampled).squeeze(-1),
        "student_entropy": -(student.exp() * student).sum(dim=-1),
        "teacher_log_probs": teacher.gather(-1, sampled).squeeze(-1),
        "student_topk_log_probs": student.gather(-1, indices) if topk else None,
        "teacher_topk_log_probs": teacher.gather(-1, indices) if topk else None,
    }


@pytest.mark.parametrize("topk, add_tail, alpha, stale", [
    (4, True, 0.5, False), (4, True, 0.0, False), (4, True, 1.0, True), (4, False, 0.5, True), (4, False, 0.25, False),
    (None, True, 1.0, False), (None, True, 1.0, True),
], ids=["topk-tail-jsd", "topk-tail-forward", "topk-tail-reverse-is", "topk-renorm-jsd-is", "topk-renorm-skewed",
        "sampled-token", "sampled-token-is"])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 50])
def test_chunked_inputs_give_the_unchunked_loss_and_gradients(topk, add_tail, alpha, stale, chunk_size):
    """Every mode (top-k with and without the tail bucket, every α, the sampled-token estimator,
    importance weights): the chunked inputs give the loss and the gradients (hidden states and LM
    head) of the full-vocabulary computation, for chunk sizes that do and do not divide T."""
    from posttrain.losses.self_distillation import distillation_inputs_in_chunks

    generator = torch.Generator().manual_seed(chunk_size)
    B, T, H, V, temperature = 3, 7, 5, 11, 0.7
    hidden = torch.randn(B, T, H, generator=generator, dtype=torch.float64)
    weight = torch.randn(V, H, generator=generator, dtype=torch.float64)
    teacher_logits = torch.randn(B, T, V, generator=generator, dtype=torch.float64)
    completion_ids = torch.randint(0, V, (B, T), generator=generator)
    mask = (torch.rand(B, T, generator=generator) > 0.2).long()
    old = -torch.rand(B, T, generator=generator, dtype=torch.float64) * 3 if stale else None
    options = dict(alpha=alpha, add_tail=add_tail, is_clip=2.0, old_log_probs=old, sample_mask=torch.tensor([1, 0, 1]))

    results = []
    for chunked in (False, True):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        head = lambda states: states @ w.T / temperature  # noqa: E731
        if chunked:
            inputs = distillation_inputs_in_chunks(h, head, lambda positions: teacher_logits[:, positions], completion_ids, topk, chunk_size)
        else:
            inputs = unchunked_inputs(h, head, teacher_logits, completion_ids, topk)
        loss, metrics = self_distillation_loss(inputs["student_log_probs"], inputs["teacher_log_probs"], mask,
                                               inputs["student_topk_log_probs"], inputs["teacher_topk_log_probs"], **options)
        loss.backward()
        results.append((loss.detach(), metrics, h.grad, w.grad, inputs))
    (loss, metrics, h_grad, w_grad, inputs), (chunked_loss, chunked_metrics, chunked_h_grad, chunked_w_grad, chunked_inputs) = results
    assert loss != 0 and h_grad.abs().sum() > 0
    assert_close(chunked_loss, loss, rtol=1e-12, atol=1e-12)
    assert chunked_metrics == pytest.approx(metrics, rel=1e-12)
    assert_close(chunked_h_grad, h_grad, rtol=1e-10, atol=1e-12)
    assert_close(chunked_w_grad, w_grad, rtol=1e-10, atol=1e-12)
    for name, value in inputs.items():
        assert (value is None) == (chunked_inputs[name] is None)
        if value is not None:
            assert_close(chunked_inputs[name].detach(), value.detach(), rtol=0, atol=0)  # position-wise ops: bit-equal


def test_num_tokens_divides_the_summed_loss_by_hand():
    """Sampled-token mode: per-token loss (log s − log t)·log s on the masked tokens, summed, over
    the given count (a global one), and the metric keeps the batch's own token mean."""
    student = torch.tensor([[-1.0, -2.0, -0.5]])
    teacher = torch.tensor([[-1.5, -1.0, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    per_token = [(-1.0 + 1.5) * -1.0, (-2.0 + 1.0) * -2.0]  # -0.5, 2.0
    loss, metrics = self_distillation_loss(student, teacher, mask, alpha=1.0, num_tokens=10.0)
    assert loss.item() == pytest.approx(sum(per_token) / 10)
    assert metrics["divergence"] == pytest.approx(sum(per_token) / 2)
    mean, _ = self_distillation_loss(student, teacher, mask, alpha=1.0)
    assert mean.item() == pytest.approx(sum(per_token) / 2)


def test_token_weights_scale_each_tokens_loss_by_hand():
    """vLLM's trainer/sampler ratio per token, or per sequence (B, 1), multiplies each token's loss."""
    student = torch.tensor([[-1.0, -2.0], [-0.5, -1.0]])
    teacher = torch.tensor([[-1.5, -1.0], [-1.0, -2.0]])
    mask = torch.ones(2, 2)
    per_token = [[(-1.0 + 1.5) * -1.0, (-2.0 + 1.0) * -2.0], [(-0.5 + 1.0) * -0.5, (-1.0 + 2.0) * -1.0]]  # [[-0.5, 2], [-0.25, -1]]
    per_token_weights = torch.tensor([[2.0, 0.5], [0.0, 3.0]])
    loss, _ = self_distillation_loss(student, teacher, mask, alpha=1.0, token_weights=per_token_weights)
    assert loss.item() == pytest.approx((-0.5 * 2 + 2 * 0.5 + 0 + -1 * 3) / 4)
    per_sequence, _ = self_distillation_loss(student, teacher, mask, alpha=1.0, token_weights=torch.tensor([[1.0], [0.0]]))
    assert per_sequence.item() == pytest.approx((-0.5 + 2.0) / 4)  # the second sequence masked (TRL's sequence_mask)
    weights = torch.tensor([[2.0, 0.5], [1.0, 1.0]], requires_grad=True)
    student_leaf = student.clone().requires_grad_(True)
    self_distillation_loss(student_leaf, teacher, mask, alpha=1.0, token_weights=weights)[0].backward()
    assert weights.grad is None  # the weights carry no gradient


# -- the reference's aggregation: a token mean per sample, over all samples ----------------------


def test_sequence_mean_weights_by_hand():
    from posttrain.losses import sequence_mean_weights

    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert_close(sequence_mean_weights(mask), torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))


def test_sequence_mean_aggregation_by_hand():
    """Sampled-token mode, per-token loss (s − t)·s: sample 0: (0.5)(−1) = −0.5 and (−1)(−2) = 2,
    mean 0.75; sample 1: (2)(−1) = −2 on its one token; sample 2 has no teacher signal. The
    reference's aggregation: (0.75 − 2 + 0) / 3 samples; the token mean: (−0.5 + 2 − 2) / 3 tokens.
    The logged divergence is the token mean either way."""
    from posttrain.losses import sequence_mean_weights

    student = torch.tensor([[-1.0, -2.0], [-1.0, -1.0], [-1.0, -1.0]])
    teacher = torch.tensor([[-1.5, -1.0], [-3.0, 0.0], [-2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    signal = torch.tensor([1.0, 1.0, 0.0])
    common = dict(response_mask=mask, alpha=1.0, is_clip=None, sample_mask=signal)
    token_mean, metrics = self_distillation_loss(student, teacher, **common)
    assert token_mean.item() == pytest.approx((-0.5 + 2.0 - 2.0) / 3)
    sequence_mean, sequence_metrics = self_distillation_loss(
        student, teacher, **common, aggregation_weights=sequence_mean_weights(mask * signal[:, None]), num_tokens=3.0)
    assert sequence_mean.item() == pytest.approx((0.75 - 2.0 + 0.0) / 3)
    assert sequence_metrics["divergence"] == metrics["divergence"] == pytest.approx(token_mean.item())


def test_chunked_inputs_student_entropy_by_hand():
    """The logged entropy is −Σ p log p of the temperature-scaled student: log V for equal logits,
    and for logits (0, log 3) over two tokens, p = (1/4, 3/4): −(¼ log ¼ + ¾ log ¾)."""
    from posttrain.losses.self_distillation import distillation_inputs_in_chunks

    hidden = torch.tensor([[[0.0], [1.0]]], dtype=torch.float64)  # (1, 2, 1)
    weight = torch.tensor([[0.0], [math.log(3)]], dtype=torch.float64)  # V = 2
    inputs = distillation_inputs_in_chunks(hidden, lambda h: h @ weight.T, lambda positions: torch.zeros(1, 1, 2), torch.tensor([[0, 1]]), None, 1)
    assert inputs["student_entropy"][0].tolist() == pytest.approx([math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])


# -- SDPO mixed with GRPO in advantage space ------------------------------------------------------


def test_mixed_advantage_loss_value_by_hand():
    """λ = 0.25; sample 0: group advantage +0.5, both tokens distilled; sample 1: −0.5, only its
    first token distilled. A_t = λ·A_i + (1−λ)·m_t·(t − s); loss = −Σ A_t·s / 4 tokens.

    sample 0: A = 0.125 + 0.75·(−1.5 + 1) = −0.25, and 0.125 + 0.75·(−1 + 2) = 0.875
    sample 1: A = −0.125 + 0.75·(−2 + 0.5) = −1.25, and −0.125 (not distilled)
    """
    from posttrain.losses import mixed_advantage_loss

    student = torch.tensor([[-1.0, -2.0], [-0.5, -1.0]])
    teacher = torch.tensor([[-1.5, -1.0], [-2.0, -3.0]])
    advantages = torch.tensor([[0.5], [-0.5]])
    distill = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, metrics = mixed_advantage_loss(student, teacher, advantages, torch.ones(2, 2), distill, grpo_weight=0.25)
    expected = -(-0.25 * -1.0 + 0.875 * -2.0 + -1.25 * -0.5 + -0.125 * -1.0) / 4
    assert loss.item() == pytest.approx(expected)
    assert metrics["distill_tokens"] == 3
    assert metrics["divergence"] == pytest.approx(((-1 + 1.5) + (-2 + 1) + (-0.5 + 2)) / 3)  # log s − log t, distilled tokens


def test_mixed_advantage_loss_gradient_is_minus_the_advantage():
    """d loss / d log s(y_t) = −A_t / n: the advantage itself gets no gradient."""
    from posttrain.losses import mixed_advantage_loss

    student = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    teacher = torch.tensor([[-1.5, -1.0, -0.5]])
    loss, _ = mixed_advantage_loss(student, teacher, torch.tensor([[1.0]]), torch.ones(1, 3), torch.ones(1, 3), grpo_weight=0.5)
    loss.backward()
    advantages = [0.5 + 0.5 * (-1.5 + 1.0), 0.5 + 0.5 * (-1.0 + 2.0), 0.5 + 0.0]
    assert student.grad[0].tolist() == pytest.approx([-a / 3 for a in advantages])


def test_mixed_advantage_loss_at_lambda_0_is_sampled_token_sdpo():
    """λ = 0: the sampled-token SDPO loss, value and gradient, whatever the group advantages."""
    from posttrain.losses import mixed_advantage_loss

    generator = torch.Generator().manual_seed(0)
    student = -torch.rand(3, 5, generator=generator, dtype=torch.float64) * 3
    teacher = -torch.rand(3, 5, generator=generator, dtype=torch.float64) * 3
    mask = (torch.rand(3, 5, generator=generator) > 0.3).double()
    old = -torch.rand(3, 5, generator=generator, dtype=torch.float64) * 3
    grads = []
    for mixed in (True, False):
        s = student.clone().requires_grad_()
        if mixed:
            loss, _ = mixed_advantage_loss(s, teacher, torch.randn(3, 1, dtype=torch.float64), mask, mask, 0.0, old_log_probs=old)
        else:
            loss, _ = self_distillation_loss(s, teacher, mask, alpha=1.0, old_log_probs=old)
        loss.backward()
        grads.append((loss.detach(), s.grad))
    assert_close(grads[0][0], grads[1][0])
    assert_close(grads[0][1], grads[1][1])


def test_mixed_advantage_loss_learns_where_grpo_has_no_signal():
    """A group where every sample failed has advantage 0: GRPO alone (λ = 1) gives no gradient,
    the mix still pushes the tokens where the teacher disagrees, and only those."""
    from posttrain.losses import mixed_advantage_loss

    teacher = torch.tensor([[-1.0, -0.1]])
    for weight, moved in ((1.0, [0.0, 0.0]), (0.5, [0.0, -0.5 * (-0.1 + 2.0) / 2])):
        student = torch.tensor([[-1.0, -2.0]], requires_grad=True)
        loss, _ = mixed_advantage_loss(student, teacher, torch.zeros(1, 1), torch.ones(1, 2), torch.ones(1, 2), grpo_weight=weight)
        loss.backward()
        assert student.grad[0].tolist() == pytest.approx(moved)


def test_mixed_advantage_loss_refuses_lambda_out_of_range():
    from posttrain.losses import mixed_advantage_loss

    with pytest.raises(ValueError, match="grpo_weight"):
        mixed_advantage_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 1.5)
