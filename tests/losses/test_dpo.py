"""dpo_loss against values worked out by hand with the math module (formulas: the module docstring)."""

from __future__ import annotations

import math
import typing

import pytest
import torch
from torch.testing import assert_close

from posttrain.losses import DPO_LOSS_TYPES, DPO_LOSSES, dpo_loss
from posttrain.losses.dpo import DPOLossType

# Three pairs; their implicit-reward gaps M = chosen - rejected are [1.0, -1.0, 3.0].
CHOSEN = [1.0, -0.5, 2.0]
REJECTED = [0.0, 0.5, -1.0]
MARGINS = [1.0, -1.0, 3.0]


def _pairs(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = torch.tensor(CHOSEN, requires_grad=requires_grad)
    rejected = torch.tensor(REJECTED, requires_grad=requires_grad)
    return chosen, rejected


def _log_sigmoid(x: float) -> float:
    """log σ(x) = −log(1 + e^{−x})."""
    return -math.log1p(math.exp(-x))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _expected(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _sigmoid_by_hand(beta: float, eps: float = 0.0) -> list[float]:
    return [-(1 - eps) * _log_sigmoid(beta * m) - eps * _log_sigmoid(-beta * m) for m in MARGINS]


def _robust_by_hand(beta: float, eps: float) -> list[float]:
    return [(-(1 - eps) * _log_sigmoid(beta * m) + eps * _log_sigmoid(-beta * m)) / (1 - 2 * eps) for m in MARGINS]


def test_margin_fixture_is_what_the_hand_values_assume():
    assert [c - r for c, r in zip(CHOSEN, REJECTED, strict=True)] == MARGINS


# ---------------------------------------------------------------- sigmoid (DPO / cDPO)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_sigmoid_matches_hand_values(beta):
    chosen, rejected = _pairs()
    loss = dpo_loss(chosen, rejected, beta=beta, loss_type="sigmoid")
    assert_close(loss, _expected(_sigmoid_by_hand(beta)))


def test_sigmoid_literal_values():
    # −log σ(0) = log 2 whatever β; −log σ(0.1·1) = log(1 + e^{−0.1}) = 0.64439666...
    loss = dpo_loss(torch.tensor([0.3, 1.0]), torch.tensor([0.3, 0.0]), beta=0.1)
    assert_close(loss, _expected([math.log(2.0), 0.6443966600735709]))


def test_sigmoid_is_the_default_loss_type():
    chosen, rejected = _pairs()
    assert_close(dpo_loss(chosen, rejected, beta=0.5), _expected(_sigmoid_by_hand(0.5)))


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_sigmoid_with_label_smoothing_is_cdpo(beta, eps):
    chosen, rejected = _pairs()
    loss = dpo_loss(chosen, rejected, beta=beta, loss_type="sigmoid", label_smoothing=eps)
    assert_close(loss, _expected(_sigmoid_by_hand(beta, eps)))
    # and it really differs from plain DPO
    assert not torch.allclose(loss, dpo_loss(chosen, rejected, beta=beta, loss_type="sigmoid"))


def test_cdpo_literal_value():
    # M = 0: −(1−ε)·log σ(0) − ε·log σ(0) = log 2 for any ε
    loss = dpo_loss(torch.tensor([0.0]), torch.tensor([0.0]), beta=0.5, label_smoothing=0.2)
    assert_close(loss, _expected([math.log(2.0)]))


# ---------------------------------------------------------------- ipo


def test_ipo_matches_hand_values_beta_01():
    # (M − 1/(2·0.1))² = (M − 5)² for M = 1, −1, 3
    chosen, rejected = _pairs()
    assert_close(dpo_loss(chosen, rejected, beta=0.1, loss_type="ipo"), _expected([16.0, 36.0, 4.0]))


def test_ipo_matches_hand_values_beta_05():
    # (M − 1)² for M = 1, −1, 3
    chosen, rejected = _pairs()
    assert_close(dpo_loss(chosen, rejected, beta=0.5, loss_type="ipo"), _expected([0.0, 4.0, 4.0]))


@pytest.mark.parametrize("length_dtype", [torch.long, torch.float32])
def test_ipo_with_lengths_averages_per_token(length_dtype):
    chosen, rejected = _pairs()
    chosen_lengths = torch.tensor([2, 5, 4], dtype=length_dtype)
    rejected_lengths = torch.tensor([3, 1, 2], dtype=length_dtype)
    # per token: chosen [0.5, −0.1, 0.5], rejected [0.0, 0.5, −0.5] → M = [0.5, −0.6, 1.0]
    # β = 0.5: (M − 1)² = [0.25, 2.56, 0.0]
    loss = dpo_loss(
        chosen, rejected, beta=0.5, loss_type="ipo", chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths
    )
    assert_close(loss, _expected([0.25, 2.56, 0.0]))
    # β = 0.1: (M − 5)² = [20.25, 31.36, 16.0]
    loss = dpo_loss(
        chosen, rejected, beta=0.1, loss_type="ipo", chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths
    )
    assert_close(loss, _expected([20.25, 31.36, 16.0]))


def test_ipo_lengths_of_one_equal_no_lengths():
    chosen, rejected = _pairs()
    ones = torch.ones(3, dtype=torch.long)
    with_lengths = dpo_loss(chosen, rejected, beta=0.1, loss_type="ipo", chosen_lengths=ones, rejected_lengths=ones)
    assert_close(with_lengths, dpo_loss(chosen, rejected, beta=0.1, loss_type="ipo"))


def test_lengths_are_ignored_by_non_ipo_losses():
    chosen, rejected = _pairs()
    lengths = torch.tensor([2, 5, 4])
    for loss_type in ("sigmoid", "hinge", "robust"):
        with_lengths = dpo_loss(
            chosen, rejected, beta=0.1, loss_type=loss_type, chosen_lengths=lengths, rejected_lengths=lengths
        )
        assert_close(with_lengths, dpo_loss(chosen, rejected, beta=0.1, loss_type=loss_type))


# ---------------------------------------------------------------- hinge


def test_hinge_matches_hand_values():
    chosen, rejected = _pairs()
    # max(0, 1 − 0.1·M) for M = 1, −1, 3
    assert_close(dpo_loss(chosen, rejected, beta=0.1, loss_type="hinge"), _expected([0.9, 1.1, 0.7]))
    # max(0, 1 − 0.5·M): the third pair has βM = 1.5 ≥ 1
    assert_close(dpo_loss(chosen, rejected, beta=0.5, loss_type="hinge"), _expected([0.5, 1.5, 0.0]))


def test_hinge_is_zero_when_beta_margin_at_least_one():
    chosen = torch.tensor([2.0, 10.0, 3.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0, -1.0], requires_grad=True)
    loss = dpo_loss(chosen, rejected, beta=0.5, loss_type="hinge")  # βM = 1, 5, 2
    assert torch.equal(loss, torch.zeros(3))
    loss.sum().backward()
    assert torch.equal(chosen.grad, torch.zeros(3))
    assert torch.equal(rejected.grad, torch.zeros(3))


# ---------------------------------------------------------------- robust


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_robust_with_zero_eps_equals_sigmoid(beta):
    chosen, rejected = _pairs()
    robust = dpo_loss(chosen, rejected, beta=beta, loss_type="robust", label_smoothing=0.0)
    assert_close(robust, dpo_loss(chosen, rejected, beta=beta, loss_type="sigmoid"))
    assert_close(robust, _expected(_sigmoid_by_hand(beta)))


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.4])
def test_robust_matches_hand_values(beta, eps):
    chosen, rejected = _pairs()
    loss = dpo_loss(chosen, rejected, beta=beta, loss_type="robust", label_smoothing=eps)
    assert_close(loss, _expected(_robust_by_hand(beta, eps)))


def test_robust_literal_value():
    # M = 0: [−(1−ε)·log σ(0) + ε·log σ(0)]/(1−2ε) = log 2·(1−2ε)/(1−2ε) = log 2
    loss = dpo_loss(torch.tensor([0.0]), torch.tensor([0.0]), beta=0.1, loss_type="robust", label_smoothing=0.2)
    assert_close(loss, _expected([math.log(2.0)]))
    # M = 1, β = 1, ε = 0.25: [0.75·log(1+e^{−1}) − 0.25·log(1+e)]/0.5
    loss = dpo_loss(torch.tensor([1.0]), torch.tensor([0.0]), beta=1.0, loss_type="robust", label_smoothing=0.25)
    value = (0.75 * math.log1p(math.exp(-1.0)) - 0.25 * math.log1p(math.e)) / 0.5
    assert_close(loss, _expected([value]))
    assert value == pytest.approx(-0.18673831, abs=1e-7)  # unbiased, so it can go below zero


def test_robust_differs_from_cdpo():
    chosen, rejected = _pairs()
    robust = dpo_loss(chosen, rejected, beta=0.5, loss_type="robust", label_smoothing=0.2)
    cdpo = dpo_loss(chosen, rejected, beta=0.5, loss_type="sigmoid", label_smoothing=0.2)
    assert not torch.allclose(robust, cdpo)


# ---------------------------------------------------------------- β as a tensor, gradients


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_tensor_beta_gives_the_same_loss_as_float_beta(loss_type):
    chosen, rejected = _pairs()
    eps = 0.2 if loss_type in ("sigmoid", "robust") else 0.0
    as_float = dpo_loss(chosen, rejected, beta=0.5, loss_type=loss_type, label_smoothing=eps)
    as_tensor = dpo_loss(chosen, rejected, beta=torch.tensor(0.5), loss_type=loss_type, label_smoothing=eps)
    assert_close(as_tensor, as_float)


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
def test_gradient_reaches_logratios_but_not_beta(loss_type):
    chosen, rejected = _pairs(requires_grad=True)
    beta = torch.tensor(0.1, requires_grad=True)
    eps = 0.1 if loss_type == "robust" else 0.0
    loss = dpo_loss(chosen, rejected, beta=beta, loss_type=loss_type, label_smoothing=eps)
    assert loss.requires_grad
    loss.sum().backward()
    assert beta.grad is None
    assert chosen.grad is not None and rejected.grad is not None
    assert torch.isfinite(chosen.grad).all()
    assert (chosen.grad != 0).all()  # every pair here is inside the hinge's active region too (βM < 1)
    # the loss depends on M = chosen − rejected only
    assert_close(rejected.grad, -chosen.grad)


def test_sigmoid_gradient_matches_hand_derivative():
    # d/dM [−log σ(βM)] = −β·σ(−βM)
    chosen, rejected = _pairs(requires_grad=True)
    beta = 0.5
    dpo_loss(chosen, rejected, beta=torch.tensor(beta, requires_grad=True)).sum().backward()
    expected = _expected([-beta * _sigmoid(-beta * m) for m in MARGINS])
    assert_close(chosen.grad, expected)
    assert_close(rejected.grad, -expected)


def test_ipo_gradient_matches_hand_derivative():
    # d/dM (M − 1/(2β))² = 2(M − 1/(2β)); β = 0.1 → 2(M − 5) = [−8, −12, −4]
    chosen, rejected = _pairs(requires_grad=True)
    dpo_loss(chosen, rejected, beta=torch.tensor(0.1, requires_grad=True), loss_type="ipo").sum().backward()
    assert_close(chosen.grad, _expected([-8.0, -12.0, -4.0]))
    assert_close(rejected.grad, _expected([8.0, 12.0, 4.0]))


def test_ipo_gradient_with_lengths_is_divided_by_length():
    # M = c/Lc − r/Lr, β = 0.5: dL/dc = 2(M − 1)/Lc; M = [0.5, −0.6, 1.0] → 2(M−1) = [−1, −3.2, 0]
    chosen, rejected = _pairs(requires_grad=True)
    dpo_loss(
        chosen,
        rejected,
        beta=0.5,
        loss_type="ipo",
        chosen_lengths=torch.tensor([2, 5, 4]),
        rejected_lengths=torch.tensor([3, 1, 2]),
    ).sum().backward()
    assert_close(chosen.grad, _expected([-0.5, -0.64, 0.0]))
    assert_close(rejected.grad, _expected([1.0 / 3.0, 3.2, 0.0]))


# ---------------------------------------------------------------- shapes and errors


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_shape_is_preserved(loss_type, batch):
    generator = torch.Generator().manual_seed(batch)
    chosen = torch.randn(batch, generator=generator)
    rejected = torch.randn(batch, generator=generator)
    loss = dpo_loss(chosen, rejected, beta=0.1, loss_type=loss_type)
    assert loss.shape == (batch,)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all()
    assert (loss >= 0).all()


def test_loss_types_constant():
    assert set(DPO_LOSS_TYPES) == {"sigmoid", "ipo", "hinge", "robust"}


def test_config_literal_names_exactly_the_registered_losses():
    """DPOJobConfig.loss_type is checked by its Literal: it must offer the registry's names, no more, no fewer."""
    assert typing.get_args(DPOLossType) == tuple(DPO_LOSSES) == DPO_LOSS_TYPES


@pytest.mark.parametrize("loss_type", ["dpo", "kto", "Sigmoid", ""])
def test_unknown_loss_type_raises(loss_type):
    chosen, rejected = _pairs()
    with pytest.raises(ValueError, match="unknown loss_type"):
        dpo_loss(chosen, rejected, beta=0.1, loss_type=loss_type)


@pytest.mark.parametrize("loss_type", DPO_LOSS_TYPES)
@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7, 1.0])
def test_label_smoothing_outside_range_raises(loss_type, eps):
    chosen, rejected = _pairs()
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(chosen, rejected, beta=0.1, loss_type=loss_type, label_smoothing=eps)


def test_label_smoothing_just_below_half_is_accepted():
    chosen, rejected = _pairs()
    loss = dpo_loss(chosen, rejected, beta=0.1, loss_type="robust", label_smoothing=0.49)
    assert_close(loss, _expected(_robust_by_hand(0.1, 0.49)))
