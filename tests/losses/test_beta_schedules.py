"""β schedules against values worked out by hand (formulas: the docstrings of beta_schedules.py)."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from posttrain.losses import BetaDPOSchedule, ConstantBeta, QuantileBetaSchedule


def _json_round_trip(state: dict) -> dict:
    """What a checkpoint does to the state: it must survive JSON."""
    return json.loads(json.dumps(state))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (torch.quantile's default), by hand."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


NON_FINITE = [float("nan"), float("inf"), float("-inf")]


# ====================================================================== ConstantBeta


class TestConstantBeta:
    def test_returns_beta_and_all_true_mask(self):
        schedule = ConstantBeta(0.25)
        beta, keep = schedule.step(torch.tensor([1.0, -2.0, 30.0, 0.0]), _gen(0))
        assert beta == 0.25
        assert keep.dtype == torch.bool
        assert keep.tolist() == [True, True, True, True]
        # and again: nothing changes with margins
        beta, keep = schedule.step(torch.tensor([-100.0, 100.0]))
        assert beta == 0.25 and keep.tolist() == [True, True]
        assert schedule.beta == 0.25

    def test_default_beta(self):
        assert ConstantBeta().beta == 0.1

    @pytest.mark.parametrize("beta", [0.0, -0.1])
    def test_non_positive_beta_raises(self, beta):
        with pytest.raises(ValueError, match="beta"):
            ConstantBeta(beta)

    def test_state_round_trip(self):
        state = _json_round_trip(ConstantBeta(0.3).state_dict())
        assert state == {"beta": 0.3}
        restored = ConstantBeta(0.1)
        restored.load_state_dict(state)
        assert restored.beta == 0.3
        beta, keep = restored.step(torch.tensor([1.0, 2.0]))
        assert beta == 0.3 and keep.tolist() == [True, True]

    @pytest.mark.parametrize("bad", NON_FINITE)
    def test_non_finite_margins_raise(self, bad):
        with pytest.raises(ValueError, match="non-finite"):
            ConstantBeta(0.1).step(torch.tensor([1.0, bad]))


# ====================================================================== BetaDPOSchedule

FIRST = [1.0, 2.0, 3.0, 4.0, 10.0]  # mean 4, unbiased std sqrt(12.5) = 3.5355...


class TestBetaDPOScheduleByHand:
    def test_first_step_by_hand(self):
        schedule = BetaDPOSchedule()  # β0 = 0.1, α = 0.6, m = 0.9, ρ = 0.8
        beta, keep = schedule.step(torch.tensor(FIRST), _gen(0))
        # running stats start at 0: M0 = 0.1·mean = 0.4, σ = 0.1·std
        assert schedule.margin_mean == pytest.approx(0.4, abs=1e-6)
        assert schedule.margin_std == pytest.approx(0.1 * statistics.stdev(FIRST), rel=1e-6)
        assert schedule.margin_std == pytest.approx(0.1 * math.sqrt(12.5), rel=1e-6)
        # n_keep = round(5·0.8) = 4
        assert keep.dtype == torch.bool and keep.shape == (5,)
        assert int(keep.sum()) == 4
        kept = [m for m, k in zip(FIRST, keep.tolist(), strict=True) if k]
        expected = 0.1 * (1 + 0.6 * (statistics.fmean(kept) - 0.4))
        assert beta == pytest.approx(expected, rel=1e-6)
        assert schedule.beta == beta
        # With M0 = 0.4 and σ ≈ 0.354 the weight of 10.0 is exp(−½·27.1²), 0 in float32, while the other
        # four are positive: sampling 4 without replacement must take exactly those four.
        assert keep.tolist() == [True, True, True, True, False]
        assert beta == pytest.approx(0.1 * (1 + 0.6 * (2.5 - 0.4)), rel=1e-6)  # 0.226

    def test_rho_one_keeps_all_and_uses_full_mean(self):
        schedule = BetaDPOSchedule(rho=1.0)
        beta, keep = schedule.step(torch.tensor(FIRST), _gen(0))
        assert keep.tolist() == [True] * 5
        assert beta == pytest.approx(0.1 * (1 + 0.6 * (4.0 - 0.4)), rel=1e-6)  # 0.316
        assert beta == pytest.approx(0.316, rel=1e-6)

    def test_two_steps_use_updated_running_stats(self):
        schedule = BetaDPOSchedule(rho=1.0)
        beta1, _ = schedule.step(torch.tensor(FIRST), _gen(0))
        assert beta1 == pytest.approx(0.316, rel=1e-6)
        second = [2.0, 4.0, 6.0]  # mean 4, std 2
        beta2, keep2 = schedule.step(torch.tensor(second), _gen(1))
        m0 = 0.9 * 0.4 + 0.1 * 4.0  # 0.76
        sigma = 0.9 * (0.1 * math.sqrt(12.5)) + 0.1 * 2.0
        assert schedule.margin_mean == pytest.approx(m0, rel=1e-6)
        assert schedule.margin_std == pytest.approx(sigma, rel=1e-6)
        assert keep2.tolist() == [True] * 3
        assert beta2 == pytest.approx(0.1 * (1 + 0.6 * (4.0 - m0)), rel=1e-6)
        assert beta2 == pytest.approx(0.2944, rel=1e-6)

    def test_custom_hyperparameters_by_hand(self):
        schedule = BetaDPOSchedule(beta=0.5, alpha=2.0, momentum=0.5, rho=1.0)
        beta, _ = schedule.step(torch.tensor([1.0, 3.0]), _gen(0))
        # M0 = 0.5·2 = 1; β = 0.5·(1 + 2·(2 − 1)) = 1.5
        assert schedule.margin_mean == pytest.approx(1.0)
        assert schedule.margin_std == pytest.approx(0.5 * math.sqrt(2.0), rel=1e-6)
        assert beta == pytest.approx(1.5, rel=1e-6)

    def test_beta_is_clamped_at_1e_3(self):
        schedule = BetaDPOSchedule(beta=0.1, alpha=10.0, rho=1.0)
        # M0 = 0.1·(−10) = −1, kept mean −10: 0.1·(1 + 10·(−9)) = −8.9 → clamped
        beta, keep = schedule.step(torch.tensor([-10.0, -10.0, -10.0]), _gen(0))
        assert keep.tolist() == [True] * 3
        assert beta == 1e-3
        assert schedule.beta == 1e-3

    def test_single_pair_works_with_std_zero(self):
        schedule = BetaDPOSchedule()
        beta, keep = schedule.step(torch.tensor([2.0]), _gen(0))
        assert keep.tolist() == [True]  # max(1, round(0.8)) = 1
        assert schedule.margin_mean == pytest.approx(0.2)
        assert schedule.margin_std == 0.0
        assert beta == pytest.approx(0.1 * (1 + 0.6 * (2.0 - 0.2)), rel=1e-6)  # 0.208

    def test_single_pair_after_a_full_batch(self):
        schedule = BetaDPOSchedule(rho=1.0)
        schedule.step(torch.tensor(FIRST), _gen(0))
        beta, keep = schedule.step(torch.tensor([2.0]), _gen(1))
        assert keep.tolist() == [True]
        # the batch std of one pair counts as 0: σ = 0.9·σ_prev
        assert schedule.margin_std == pytest.approx(0.9 * 0.1 * math.sqrt(12.5), rel=1e-6)
        assert schedule.margin_mean == pytest.approx(0.9 * 0.4 + 0.1 * 2.0, rel=1e-6)  # 0.56
        assert beta == pytest.approx(0.1 * (1 + 0.6 * (2.0 - 0.56)), rel=1e-6)  # 0.1864

    def test_mask_is_bool_of_batch_length(self):
        schedule = BetaDPOSchedule(rho=0.5)
        beta, keep = schedule.step(torch.linspace(-1.0, 1.0, 10), _gen(0))
        assert keep.dtype == torch.bool and keep.shape == (10,)
        assert int(keep.sum()) == 5
        assert isinstance(beta, float)

    @pytest.mark.parametrize(
        ("n", "rho", "n_keep"),
        [(5, 0.8, 4), (7, 0.8, 6), (9, 0.3, 3), (10, 0.5, 5), (4, 0.1, 1), (1, 0.3, 1), (6, 1.0, 6)],
    )
    def test_keeps_round_n_rho_pairs(self, n, rho, n_keep):
        schedule = BetaDPOSchedule(momentum=0.0, rho=rho)
        margins = torch.linspace(-1.0, 1.0, n)
        beta, keep = schedule.step(margins, _gen(n))
        assert int(keep.sum()) == n_keep
        assert beta == pytest.approx(0.1 * (1 + 0.6 * (margins[keep].mean().item() - schedule.margin_mean)), rel=1e-6)


# a batch whose running stats (momentum 0: M0 = mean 6.5, σ = std ≈ 4.92) give the outlier 20.0 weight ≈ 0.023
# and every other pair weight ≥ 0.77
SPREAD = [3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 20.0]
CENTRAL = 7  # 6.5, exactly at M0
OUTLIER = 9


def _drop_rates(make_schedule, margins: list[float], trials: int, seed: int) -> list[float]:
    generator = _gen(seed)
    dropped = torch.zeros(len(margins))
    batch = torch.tensor(margins)
    for _ in range(trials):
        _, keep = make_schedule().step(batch, generator)
        dropped += (~keep).float()
    return (dropped / trials).tolist()


class TestBetaDPOScheduleSampling:
    def test_outlier_is_dropped_far_more_often_than_central_pair(self):
        rates = _drop_rates(lambda: BetaDPOSchedule(momentum=0.0, rho=0.8), SPREAD, trials=1500, seed=0)
        # 2 of 10 dropped each draw: the outlier nearly always, the pair at M0 rarely
        assert sum(rates) == pytest.approx(2.0)
        assert rates[OUTLIER] > 0.9
        assert rates[CENTRAL] < 0.2
        assert rates[OUTLIER] > 5 * rates[CENTRAL]
        # weights fall off with the distance to M0 in either direction: the low edge 3.0 goes more often than 6.5
        assert rates[0] > rates[CENTRAL]

    def test_outlier_is_dropped_after_running_stats_settle(self):
        # settle the running statistics on central batches (ρ = 1: no sampling), then draw repeatedly from copies
        warm = BetaDPOSchedule(rho=1.0)
        central = torch.tensor([4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5])
        for _ in range(40):
            warm.step(central)
        assert warm.margin_mean == pytest.approx(5.75, rel=0.02)
        state = warm.state_dict()

        def make():
            schedule = BetaDPOSchedule(rho=0.8)
            schedule.load_state_dict(state)
            return schedule

        margins = [4.0, 4.5, 5.0, 5.5, 5.75, 6.0, 6.5, 7.0, 7.5, 30.0]
        rates = _drop_rates(make, margins, trials=1000, seed=1)
        assert rates[9] > 0.99  # weight of 30.0 is ~exp(−½·(24/0.9)²): never kept
        assert rates[4] < 0.2  # 5.75 sits at M0

    def test_same_generator_seed_gives_identical_masks(self):
        batch = torch.tensor(SPREAD)
        masks = {}
        for seed in range(8):
            a = BetaDPOSchedule(momentum=0.0, rho=0.5)
            b = BetaDPOSchedule(momentum=0.0, rho=0.5)
            beta_a, keep_a = a.step(batch, _gen(seed))
            beta_b, keep_b = b.step(batch, _gen(seed))
            assert torch.equal(keep_a, keep_b)
            assert beta_a == beta_b
            masks[seed] = tuple(keep_a.tolist())
        # the generator does drive the draw: different seeds do not all give one mask
        assert len(set(masks.values())) > 1

    def test_state_round_trip_continues_identically(self):
        data = _gen(1234)
        batches = [torch.randn(12, generator=data) * 2.0 + 1.0 for _ in range(6)]
        original = BetaDPOSchedule(rho=0.75)
        for i, batch in enumerate(batches[:3]):
            original.step(batch, _gen(i))
        state = _json_round_trip(original.state_dict())
        assert set(state) == {"beta", "margin_mean", "margin_std"}
        assert state["margin_mean"] != 0.0 and state["margin_std"] != 0.0

        restored = BetaDPOSchedule(rho=0.75)
        restored.load_state_dict(state)
        assert restored.state_dict() == original.state_dict()
        fresh = BetaDPOSchedule(rho=0.75)  # the same steps without the state: a different trajectory
        for i, batch in enumerate(batches[3:]):
            beta_o, keep_o = original.step(batch, _gen(100 + i))
            beta_r, keep_r = restored.step(batch, _gen(100 + i))
            beta_f, _ = fresh.step(batch, _gen(100 + i))
            assert beta_r == beta_o
            assert torch.equal(keep_r, keep_o)
            assert beta_f != beta_o
        assert restored.state_dict() == original.state_dict()


class TestBetaDPOScheduleErrors:
    @pytest.mark.parametrize("beta", [0.0, -0.1])
    def test_non_positive_beta(self, beta):
        with pytest.raises(ValueError, match="beta"):
            BetaDPOSchedule(beta=beta)

    @pytest.mark.parametrize("rho", [0.0, 1.5, -0.5])
    def test_rho_outside_range(self, rho):
        with pytest.raises(ValueError, match="rho"):
            BetaDPOSchedule(rho=rho)

    @pytest.mark.parametrize("momentum", [1.0, -0.1, 1.5])
    def test_momentum_outside_range(self, momentum):
        with pytest.raises(ValueError, match="momentum"):
            BetaDPOSchedule(momentum=momentum)

    def test_boundary_values_are_accepted(self):
        BetaDPOSchedule(rho=1.0, momentum=0.0)

    @pytest.mark.parametrize("bad", NON_FINITE)
    def test_non_finite_margins(self, bad):
        schedule = BetaDPOSchedule()
        with pytest.raises(ValueError, match="non-finite"):
            schedule.step(torch.tensor([1.0, bad, 2.0]), _gen(0))
        # the rejected batch left no trace
        assert schedule.margin_mean == 0.0 and schedule.margin_std == 0.0 and schedule.beta == 0.1

    def test_empty_margins(self):
        with pytest.raises(ValueError, match="empty"):
            BetaDPOSchedule().step(torch.tensor([]), _gen(0))


# ====================================================================== QuantileBetaSchedule

WARMUP_BATCHES = [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]  # 0..11: q0.9 = 9.9
AFTER_WARMUP = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 10.5, 20.0]  # q0.9 = 10.5 + 0.1·9.5 = 11.45


def _warmed_up(**kwargs) -> QuantileBetaSchedule:
    schedule = QuantileBetaSchedule(warmup_steps=3, **kwargs)
    for batch in WARMUP_BATCHES:
        schedule.step(torch.tensor(batch))
    return schedule


class TestQuantileBetaScheduleByHand:
    def test_hand_quantile_helper(self):
        assert _quantile([float(i) for i in range(12)], 0.9) == pytest.approx(9.9)
        assert _quantile(AFTER_WARMUP, 0.9) == pytest.approx(11.45)

    def test_warmup_holds_beta_and_sets_tau_at_the_end(self):
        schedule = QuantileBetaSchedule(beta=0.1, warmup_steps=3)
        for i, batch in enumerate(WARMUP_BATCHES, start=1):
            beta, keep = schedule.step(torch.tensor(batch))
            assert beta == 0.1 and schedule.beta == 0.1
            assert keep.tolist() == [True] * len(batch)
            if i < 3:
                assert schedule.tau is None
        all_warmup = [m for batch in WARMUP_BATCHES for m in batch]
        assert schedule.tau == pytest.approx(_quantile(all_warmup, 0.9), rel=1e-6)
        assert schedule.tau == pytest.approx(9.9, rel=1e-6)
        assert schedule.tau == pytest.approx(torch.quantile(torch.tensor(all_warmup), 0.9).item())

    def test_one_update_after_warmup_by_hand(self):
        schedule = _warmed_up()
        before = schedule.beta
        beta, keep = schedule.step(torch.tensor(AFTER_WARMUP))
        # step returns the β from before the update, and .beta has moved
        assert beta == before == 0.1
        assert keep.tolist() == [True] * 10
        tau = 0.95 * 9.9 + 0.05 * 11.45  # 9.9775
        p_hat = 2 / 10  # 10.5 and 20.0 are ≥ τ
        u = (p_hat - 0.1) / math.sqrt(0.1 * 0.9 / 10)
        s = math.tanh(2.0 * u)
        expected = min(2.0, max(0.0, 0.1 * math.exp(0.005 * s)))
        assert schedule.tau == pytest.approx(tau, rel=1e-6)
        assert schedule.last_exceedance == pytest.approx(p_hat)
        assert schedule.beta == pytest.approx(expected, rel=1e-6)
        assert schedule.beta == pytest.approx(0.10048670, rel=1e-6)
        assert schedule.beta != before
        # the next step hands out the updated β
        beta_next, _ = schedule.step(torch.tensor(AFTER_WARMUP))
        assert beta_next == pytest.approx(expected, rel=1e-6)

    def test_two_updates_by_hand_with_custom_hyperparameters(self):
        schedule = QuantileBetaSchedule(beta=0.2, delta=0.25, momentum=0.5, alpha=0.1, gamma=1.0, warmup_steps=1)
        schedule.step(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))  # τ = q0.75 = 3.0
        assert schedule.tau == pytest.approx(3.0)
        beta, _ = schedule.step(torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0]))
        assert beta == 0.2
        # τ = 0.5·3 + 0.5·3 = 3; p̂ = 2/5; u = 0.15/sqrt(0.25·0.75/5)
        u = 0.15 / math.sqrt(0.25 * 0.75 / 5)
        beta1 = 0.2 * math.exp(0.1 * math.tanh(u))
        assert schedule.tau == pytest.approx(3.0)
        assert schedule.beta == pytest.approx(beta1, rel=1e-6)
        beta, _ = schedule.step(torch.tensor([-5.0, -4.0, -3.0, -2.0]))
        assert beta == pytest.approx(beta1, rel=1e-6)
        # q0.75 of [−5, −4, −3, −2] = −2.75; τ = 0.5·3 + 0.5·(−2.75) = 0.125; p̂ = 0
        u = (0.0 - 0.25) / math.sqrt(0.25 * 0.75 / 4)
        assert schedule.tau == pytest.approx(0.125)
        assert schedule.last_exceedance == 0.0
        assert schedule.beta == pytest.approx(beta1 * math.exp(0.1 * math.tanh(u)), rel=1e-6)

    def test_margins_far_above_tau_raise_beta(self):
        schedule = QuantileBetaSchedule(beta=0.1, warmup_steps=1)
        schedule.step(torch.arange(10.0))  # τ = 8.1
        beta, _ = schedule.step(torch.arange(10.0) + 100.0)
        assert beta == 0.1
        assert schedule.last_exceedance == 1.0
        # u = 0.9/0.0949 ≈ 9.5: tanh saturates → β·e^{0.005}
        assert schedule.beta == pytest.approx(0.1 * math.exp(0.005), rel=1e-6)
        assert schedule.beta > 0.1

    def test_margins_far_below_tau_lower_beta(self):
        schedule = QuantileBetaSchedule(beta=0.1, warmup_steps=1)
        schedule.step(torch.arange(10.0))  # τ = 8.1
        schedule.step(-100.0 - torch.arange(10.0))
        assert schedule.last_exceedance == 0.0
        u = -0.1 / math.sqrt(0.09 / 10)
        assert schedule.beta == pytest.approx(0.1 * math.exp(0.005 * math.tanh(2 * u)), rel=1e-6)
        assert schedule.beta < 0.1

    def test_clipped_at_beta_max(self):
        schedule = QuantileBetaSchedule(beta=0.1, beta_min=0.05, beta_max=0.2, alpha=5.0, warmup_steps=1)
        schedule.step(torch.arange(10.0))
        schedule.step(torch.arange(10.0) + 100.0)  # unclipped: 0.1·e^5 ≈ 14.8
        assert schedule.beta == 0.2
        schedule.step(torch.arange(10.0) + 200.0)
        assert schedule.beta == 0.2

    def test_clipped_at_beta_min(self):
        schedule = QuantileBetaSchedule(beta=0.1, beta_min=0.05, beta_max=0.2, alpha=5.0, warmup_steps=1)
        schedule.step(torch.arange(10.0))
        schedule.step(-100.0 - torch.arange(10.0))  # unclipped: 0.1·e^{−4.86} ≈ 0.0008
        assert schedule.beta == 0.05

    def test_zero_warmup_initialises_tau_from_first_batch(self):
        schedule = QuantileBetaSchedule(beta=0.1, warmup_steps=0)
        first = [0.0] * 8 + [1.0, 1.0]  # q0.9 = 1.0, and 2 of 10 reach it
        beta, _ = schedule.step(torch.tensor(first))
        assert beta == 0.1
        assert schedule.tau == pytest.approx(1.0)
        assert schedule.last_exceedance == pytest.approx(0.2)
        # the controller already runs on the first batch
        u = 0.1 / math.sqrt(0.09 / 10)
        assert schedule.beta == pytest.approx(0.1 * math.exp(0.005 * math.tanh(2 * u)), rel=1e-6)

    def test_update_is_step_without_return(self):
        a, b = _warmed_up(), _warmed_up()
        a.step(torch.tensor(AFTER_WARMUP))
        assert b.update(torch.tensor(AFTER_WARMUP)) is None
        assert a.state_dict() == b.state_dict()


class TestQuantileBetaScheduleState:
    def test_round_trip_mid_warmup_keeps_collected_margins(self):
        original = QuantileBetaSchedule(warmup_steps=3)
        for batch in WARMUP_BATCHES[:2]:
            original.step(torch.tensor(batch))
        state = _json_round_trip(original.state_dict())
        assert state["warmup_margins"] == WARMUP_BATCHES[0] + WARMUP_BATCHES[1]
        assert state["tau"] is None and state["num_updates"] == 2

        restored = QuantileBetaSchedule(warmup_steps=3)
        restored.load_state_dict(state)
        for schedule in (original, restored):
            schedule.step(torch.tensor(WARMUP_BATCHES[2]))
        # τ comes from all 12 warm-up margins, the 8 from before the checkpoint included
        assert restored.tau == original.tau
        assert restored.tau == pytest.approx(9.9, rel=1e-6)
        for schedule in (original, restored):
            schedule.step(torch.tensor(AFTER_WARMUP))
        assert restored.beta == original.beta == pytest.approx(0.10048670, rel=1e-6)
        assert restored.state_dict() == original.state_dict()

    def test_round_trip_after_warmup_continues_identically(self):
        data = _gen(7)
        batches = [torch.randn(16, generator=data) + 0.1 * i for i in range(10)]
        original = QuantileBetaSchedule(warmup_steps=2, alpha=0.05)
        for batch in batches[:5]:
            original.step(batch)
        state = _json_round_trip(original.state_dict())
        assert state["num_updates"] == 5 and state["tau"] is not None and state["last_exceedance"] is not None
        restored = QuantileBetaSchedule(warmup_steps=2, alpha=0.05)
        restored.load_state_dict(state)
        assert restored.state_dict() == original.state_dict()
        for batch in batches[5:]:
            beta_o, keep_o = original.step(batch)
            beta_r, keep_r = restored.step(batch)
            assert beta_r == beta_o
            assert torch.equal(keep_r, keep_o)
            assert restored.tau == original.tau
        assert restored.state_dict() == original.state_dict()
        assert original.beta != 0.1


class TestQuantileBetaScheduleErrors:
    @pytest.mark.parametrize("delta", [0.0, 1.0, -0.1, 1.5])
    def test_delta_outside_open_unit_interval(self, delta):
        with pytest.raises(ValueError, match="delta"):
            QuantileBetaSchedule(delta=delta)

    @pytest.mark.parametrize("beta", [0.0, -0.1])
    def test_non_positive_beta(self, beta):
        with pytest.raises(ValueError, match="beta"):
            QuantileBetaSchedule(beta=beta)

    def test_beta_min_above_beta(self):
        with pytest.raises(ValueError, match="beta_min"):
            QuantileBetaSchedule(beta=0.1, beta_min=0.2)

    def test_beta_above_beta_max(self):
        with pytest.raises(ValueError, match="beta_max"):
            QuantileBetaSchedule(beta=3.0)

    @pytest.mark.parametrize("bad", NON_FINITE)
    def test_non_finite_margins(self, bad):
        schedule = QuantileBetaSchedule(warmup_steps=1)
        with pytest.raises(ValueError, match="non-finite"):
            schedule.step(torch.tensor([1.0, bad]))
        assert schedule.num_updates == 0 and schedule.state_dict()["warmup_margins"] == []

    def test_empty_margins(self):
        with pytest.raises(ValueError, match="empty"):
            QuantileBetaSchedule().step(torch.tensor([]))
