"""Evaluation on held-out data during training (sft, dpo, sdpo, grpo), through the CLI: the keys,
their errors, eval metrics in metrics.jsonl and the report, and load_best_model_at_end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from posttrain.cli import main
from posttrain.data.jsonl import iter_jsonl, write_jsonl
from posttrain.errors import ConfigError

KEYS = ["eval_dataset_name", "eval_split", "val_ratio", "eval_steps", "load_best_model_at_end", "metric_for_best_model"]


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    """Exit status, the printed metrics (None on an error) and stderr."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    printed = captured.out[captured.out.find("{\n"):]  # after the trainer's own log lines
    return code, json.loads(printed) if code == 0 else None, captured.err


def rows(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path)]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[Path, Path]:
    """Four pairs, and the same four with chosen and rejected swapped: whatever training teaches
    on the first, it unlearns on the second, so the held-out loss is lowest at the first evaluation."""
    root = tmp_path_factory.mktemp("pairs")
    train = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 7)} for i in range(4)]
    swapped = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in train]
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "swapped.jsonl", swapped)
    return root / "train.jsonl", root / "swapped.jsonl"


@pytest.mark.parametrize("command", ["sft", "dpo", "kto", "rm", "sdpo", "grpo"])
def test_help_lists_the_validation_keys(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert all(f"--{key} " in out for key in KEYS)
    assert ("default 'eval_reward'" if command in ("sdpo", "grpo") else "default 'eval_loss'") in out


BEST = ["--save_strategy", "steps", "--save_steps", "10", "--load_best_model_at_end", "true"]


@pytest.mark.parametrize(
    "command, extra, message",
    [
        ("sft", ["--val_ratio", "1"], "config key 'val_ratio' must be in (0, 1), got 1.0"),
        ("sft", ["--val_ratio", "-0.1"], "config key 'val_ratio' must be in (0, 1), got -0.1"),
        ("dpo", ["--val_ratio", "0.1", "--eval_dataset_name", "held_out.jsonl"],
         "config key 'val_ratio' cannot be combined with 'eval_dataset_name'"),
        ("sft", ["--eval_steps", "5"], "config key 'eval_steps' needs held-out data: set eval_dataset_name or val_ratio"),
        ("sdpo", BEST, "config key 'load_best_model_at_end' needs held-out data: set eval_dataset_name or val_ratio"),
        ("grpo", ["--val_ratio", "0.1", "--load_best_model_at_end", "true"],
         "config key 'load_best_model_at_end' needs a checkpoint at every evaluation: set save_strategy: steps"),
        ("dpo", ["--val_ratio", "0.1", *BEST, "--eval_steps", "4"],
         "config key 'load_best_model_at_end' needs a checkpoint at every evaluation"),
        ("sft", ["--val_ratio", "0.05", "--dataset_train_split", "train[:4]"],
         "config key 'val_ratio' (0.05) of 4 train rows holds out 0"),
    ],
    ids=["ratio-1", "ratio-negative", "ratio-and-dataset", "steps-without-data", "best-without-data",
         "best-without-step-checkpoints", "save-steps-not-a-multiple", "ratio-holds-out-nothing"],
)
def test_bad_validation_config_is_one_line_exit_2_before_training(capsys, tiny_model_dir, tmp_path, command, extra, message):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, command, "--model_name_or_path", tiny_model_dir, "--output_dir", out, *extra)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[posttrain] ")]
    assert len(lines) == 1 and lines[0].startswith(f"posttrain {command}: error: {message}"), err
    assert not out.exists()


def test_val_ratio_holds_out_a_seeded_share_of_the_rows():
    from posttrain.commands.sft import SFTJobConfig

    located = [(f"data.jsonl:{i}", {"i": i}) for i in range(1, 21)]
    train, held_out = SFTJobConfig(val_ratio=0.25, seed=1).split_rows(located)
    assert len(held_out) == 5 and sorted(train + held_out) == sorted(located)
    assert SFTJobConfig(val_ratio=0.25, seed=1).split_rows(located) == (train, held_out)
    assert SFTJobConfig(val_ratio=0.25, seed=2).split_rows(located)[1] != held_out
    assert SFTJobConfig().split_rows(located) == (located, None)
    with pytest.raises(ConfigError, match="'val_ratio'"):
        SFTJobConfig(val_ratio=0.01).split_rows(located)

    # a dataset_mixture weight of 2 repeats every row: its copies never end up on both sides
    train, held_out = SFTJobConfig(val_ratio=0.25, seed=1).split_rows(located + located)
    assert len(held_out) == 5 and len(train) == 30
    assert not {location for location, _ in train} & {location for location, _ in held_out}


def test_sft_logs_held_out_loss_at_eval_steps_and_the_report_plots_it(capsys, tiny_model_dir, tmp_path):
    from posttrain.pipeline.report import curve_series, write_report

    out = tmp_path / "run" / "sft"
    code, metrics, err = run_cli(capsys, "sft", "--model_name_or_path", tiny_model_dir, "--dataset_train_split", "train[:20]",
                                 "--val_ratio", "0.2", "--eval_steps", "2", "--max_steps", "3", "--per_device_train_batch_size", "4",
                                 "--logging_steps", "1", "--save_strategy", "no", "--output_dir", out)
    assert code == 0, err
    logged = rows(out / "metrics.jsonl")
    assert [r["step"] for r in logged if "eval_loss" in r] == [2, 3]  # every eval_steps and the last step
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]

    manifest = {"pipeline": "p", "stages": [{"name": "sft", "command": "sft", "status": "done", "output_dir": str(out)}]}
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    assert "report_sft.png" in write_report(tmp_path / "run").read_text()
    series = curve_series(logged, "loss")
    assert [step for step, _ in series["train"]] == [1, 2, 3] and [step for step, _ in series["held-out"]] == [2, 3]


def test_dpo_saves_the_best_checkpoint_as_its_final_model(capsys, tiny_model_dir, tmp_path, pairs):
    train, swapped = pairs
    out = tmp_path / "out"
    code, metrics, err = run_cli(capsys, "dpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", train,
                                 "--eval_dataset_name", swapped, "--eval_steps", "1", "--max_steps", "3",
                                 "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
                                 "--save_strategy", "steps", "--save_steps", "1", "--load_best_model_at_end", "true",
                                 "--output_dir", out)
    assert code == 0, err
    held_out = [r for r in rows(out / "metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in held_out] == [1, 2, 3]
    assert all({"eval_rewards/accuracies", "eval_rewards/margins"} <= set(r) for r in held_out)
    losses = [r["eval_loss"] for r in held_out]
    assert losses == sorted(losses)  # training on the pairs makes their swapped copies ever less likely
    assert Path(metrics["best_model_checkpoint"]).name == "checkpoint-1" and metrics["best_metric"] == losses[0]

    final, best, last = (load_file(path / "model.safetensors") for path in (out, out / "checkpoint-1", out / "checkpoint-3"))
    shared = final.keys() & best.keys()
    assert shared and all(final[k].equal(best[k]) for k in shared)
    assert not all(final[k].equal(last[k]) for k in shared)


@pytest.mark.parametrize("schedule", ["beta_dpo", "quantile"])
def test_evaluation_moves_neither_the_beta_schedule_nor_the_margin_log(tiny_model_dir, tmp_path, pairs, schedule):
    from posttrain.commands.dpo import DPOJobConfig, build_dpo_trainer

    train, swapped = pairs
    config = DPOJobConfig(model_name_or_path=tiny_model_dir, dataset_name=str(train), eval_dataset_name=str(swapped),
                          eval_steps=1, max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                          beta_schedule=schedule, quantile_warmup_steps=1, save_strategy="no", output_dir=str(tmp_path))
    trainer = build_dpo_trainer(config)
    trainer.train()  # evaluates after each step
    margin_log = rows(tmp_path / "margins" / "margins.jsonl")
    assert [(r["step"], r["update"]) for r in margin_log] == [(1, 1), (2, 2)]  # training batches only
    state = trainer.beta_schedule.state_dict()
    assert state != DPOJobConfig(beta_schedule=schedule).make_schedule().state_dict()  # training moved it

    metrics = trainer.evaluate()
    assert trainer.beta_schedule.state_dict() == state and trainer.schedule_updates == 2
    assert rows(tmp_path / "margins" / "margins.jsonl") == margin_log
    assert metrics["eval_beta"] == trainer.beta_schedule.beta and metrics["eval_kept_fraction"] == 1.0


def test_sdpo_evaluates_reward_on_held_out_prompts_and_keeps_the_best(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    code, metrics, err = run_cli(capsys, "sdpo", "--model_name_or_path", tiny_model_dir, "--dataset_train_split", "train[:10]",
                                 "--val_ratio", "0.2", "--num_generations", "4", "--max_completion_length", "8",
                                 "--per_device_train_batch_size", "8", "--max_steps", "2", "--eval_steps", "1",
                                 "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                                 "--load_best_model_at_end", "true", "--output_dir", out)
    assert code == 0, err
    held_out = [r for r in rows(out / "metrics.jsonl") if "eval_reward" in r]
    assert [r["step"] for r in held_out] == [1, 2]
    assert all("eval_self_distillation/loss" in r for r in held_out)
    rewards = [r["eval_reward"] for r in held_out]
    assert metrics["best_metric"] == max(rewards)
    assert Path(metrics["best_model_checkpoint"]).name == f"checkpoint-{rewards.index(max(rewards)) + 1}"


def test_a_metric_the_run_does_not_log_is_a_config_error(capsys, tiny_model_dir, tmp_path):
    code, _, err = run_cli(capsys, "sft", "--model_name_or_path", tiny_model_dir, "--dataset_train_split", "train[:8]",
                           "--val_ratio", "0.25", "--max_steps", "1", "--save_strategy", "steps", "--save_steps", "1",
                           "--eval_steps", "1", "--load_best_model_at_end", "true", "--metric_for_best_model", "accuracy",
                           "--output_dir", tmp_path / "out")
    assert code == 2
    assert "posttrain sft: error: config key 'metric_for_best_model': 'accuracy' is not an evaluation metric" in err
    assert "eval_mean_token_accuracy" in err
