"""posttrain dpo on TRL's DPOTrainer: references, schedules, margin log, resume, metrics."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from posttrain.commands.dpo import DPOJobConfig, build_dpo_trainer, run_dpo
from posttrain.config import load_config
from posttrain.errors import ConfigError, PosttrainError

pytestmark = pytest.mark.slow


def dpo_config(model_dir, out, **values):
    defaults = dict(model_name_or_path=model_dir, output_dir=str(out), dataset_name="task:arithmetic",
                    dataset_train_split="train[:64]", max_steps=4, per_device_train_batch_size=8,
                    learning_rate=1e-3, logging_steps=1, save_strategy="steps", save_steps=2, seed=0)
    return load_config(DPOJobConfig, values={**defaults, **values})


def margin_rows(out):
    return [json.loads(line) for line in (Path(out) / "margins" / "margins.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("reference", ["frozen copy", "lora disabled adapter", "precomputed"])
def test_reference_equals_initial_policy_at_step_one(tiny_model_dir, tmp_path, reference):
    """With the reference = the initial policy, every margin of the first batch is exactly 0."""
    extra = {"frozen copy": {}, "lora disabled adapter": {"use_peft": True, "lora_r": 4},
             "precomputed": {"precompute_ref_log_probs": True}}[reference]
    run_dpo(dpo_config(tiny_model_dir, tmp_path, max_steps=2, **extra))
    rows = margin_rows(tmp_path)
    assert rows[0]["margin"]["max"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["margin"]["min"] == pytest.approx(0.0, abs=1e-5)
    assert rows[1]["margin"]["std"] > 0  # after one update the policy has moved


def test_separate_reference_model(tiny_model_dir, tmp_path):
    from posttrain.commands.make_model import MakeModelConfig, make_model

    make_model(MakeModelConfig(out=str(tmp_path / "other"), seed=7))
    run_dpo(dpo_config(tiny_model_dir, tmp_path / "out", max_steps=1, ref_model_name_or_path=str(tmp_path / "other")))
    assert margin_rows(tmp_path / "out")[0]["margin"]["std"] > 0  # a different reference: non-zero gaps at once


def test_beta_dpo_keeps_a_fraction_and_logs_everything(tiny_model_dir, tmp_path):
    run_dpo(dpo_config(tiny_model_dir, tmp_path, beta_schedule="beta_dpo", beta_dpo_rho=0.5))
    rows = margin_rows(tmp_path)
    assert [r["update"] for r in rows] == [1, 2, 3, 4] and [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["n"] == 8 and r["kept"] == 4 for r in rows)
    assert rows[0]["schedule"]["name"] == "BetaDPOSchedule"
    raw = np.load(tmp_path / "margins" / "update-000003.npy")
    assert raw.shape == (8,) and raw.mean() == pytest.approx(rows[2]["margin"]["mean"], abs=1e-5)
    betas = {r["beta"] for r in rows[1:]}
    assert len(betas) > 1  # β moves with the margins
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step_logs = [r for r in logged if "loss" in r]
    for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "logps/chosen", "logps/rejected", "beta", "kept_fraction"):
        assert key in step_logs[0], key
    assert step_logs[0]["kept_fraction"] == 0.5


def test_training_prefers_chosen(tiny_model_dir, tmp_path):
    """Fitting one fixed batch of 8 pairs: the implicit reward must come to prefer every chosen response."""
    run_dpo(dpo_config(tiny_model_dir, tmp_path, max_steps=10, dataset_train_split="train[:8]", save_strategy="no"))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert logged[-1]["rewards/margins"] > 0.1 and logged[-1]["rewards/accuracies"] == 1.0
    assert logged[-1]["loss"] < 0.9 * logged[0]["loss"]



@pytest.mark.parametrize("schedule", [{"beta_schedule": "beta_dpo"}, {"beta_schedule": "quantile", "quantile_warmup_steps": 2, "quantile_alpha": 0.5}])
def test_resume_reproduces_the_beta_trajectory(tiny_model_dir, tmp_path, schedule, stop_after_checkpoint):
    straight = dpo_config(tiny_model_dir, tmp_path / "straight", max_steps=6, **schedule)
    run_dpo(straight)

    interrupted = dpo_config(tiny_model_dir, tmp_path / "resumed", max_steps=6, **schedule)
    trainer = build_dpo_trainer(interrupted)
    trainer.add_callback(stop_after_checkpoint(2))
    trainer.train()
    # a crash after the checkpoint at step 2 leaves later batches in the log; resume drops them
    trainer.margin_log.write(step=3, update=3, beta=9.9, loss=0.0, margins=torch.zeros(8), kept=8, schedule={})
    interrupted.resume = True
    run_dpo(interrupted)

    a, b = margin_rows(tmp_path / "straight"), margin_rows(tmp_path / "resumed")
    assert [r["update"] for r in b] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["beta"] for r in b], [r["beta"] for r in a], rtol=1e-5)
    assert [r["kept"] for r in b] == [r["kept"] for r in a]
    if schedule["beta_schedule"] == "quantile":
        assert len({r["beta"] for r in a}) > 1  # the controller actually moved after warm-up
    final_a = load_file(tmp_path / "straight" / "model.safetensors")
    final_b = load_file(tmp_path / "resumed" / "model.safetensors")
    for name in final_a:
        torch.testing.assert_close(final_b[name], final_a[name], rtol=1e-4, atol=1e-5)


def test_resume_refuses_a_different_schedule(tiny_model_dir, tmp_path):
    run_dpo(dpo_config(tiny_model_dir, tmp_path, max_steps=2))
    with pytest.raises(PosttrainError, match="trained with ConstantBeta, not BetaDPOSchedule"):
        run_dpo(dpo_config(tiny_model_dir, tmp_path, max_steps=4, beta_schedule="beta_dpo", resume=True))


@pytest.mark.parametrize("values, message", [
    ({"beta": 0}, "'beta' must be > 0"),
    ({"beta": -1}, "'beta' must be > 0"),
    ({"beta_dpo_rho": 0}, "'beta_dpo_rho' must be > 0"),
    ({"beta_dpo_rho": 1.5}, "'beta_dpo_rho' must be <= 1"),
    ({"quantile_delta": 0}, "'quantile_delta' must be > 0"),
    ({"quantile_delta": 1}, "'quantile_delta' must be <= 0.999"),
    ({"loss_type": "kto"}, "'loss_type'.*must be one of sigmoid, ipo, hinge, robust"),
    ({"beta_schedule": "quantile", "beta": 3.0}, "'beta' .* must lie in \\[quantile_beta_min, quantile_beta_max\\]"),
])
def test_bad_config_values(tiny_model_dir, tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        dpo_config(tiny_model_dir, tmp_path, **values)


def test_nan_margins_stop_with_a_clear_error(tiny_model_dir, tmp_path, monkeypatch):
    trainer = build_dpo_trainer(dpo_config(tiny_model_dir, tmp_path, max_steps=1))
    monkeypatch.setattr(type(trainer), "_reference_logps", lambda self, *a: torch.full((16,), float("nan")))
    with pytest.raises(PosttrainError, match="non-finite implicit-reward margins at step 1"):
        trainer.train()
