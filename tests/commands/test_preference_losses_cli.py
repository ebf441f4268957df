"""``posttrain kto``, and ``posttrain dpo`` with a loss TRL computes, through the CLI: one step
writes the usual layout (final model, tokenizer, metrics.jsonl); a combination that cannot work is
one line on stderr, exit 2, naming the keys, before anything is written."""

import json
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.data.jsonl import write_jsonl

PAIRS = [{"prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "rejected": f"{2 * i + 1} or so"} for i in range(4)]
LABELLED = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"} for p in PAIRS
            for side in ("chosen", "rejected")]
ONE_STEP = ["--max_steps", "1", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--save_strategy", "no"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("preference-data")
    write_jsonl(directory / "pairs.jsonl", PAIRS)
    write_jsonl(directory / "labelled.jsonl", LABELLED)
    return directory


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "command, data_file, extra, metric",
    [
        ("kto", "labelled.jsonl", [], "kl"),
        ("dpo", "pairs.jsonl", ["--loss_type", "bco_pair"], "rewards/margins"),
        ("dpo", "pairs.jsonl", ["--loss_type", "simpo", "--beta", "2.0", "--simpo_gamma", "0.3"], "logps/chosen"),
    ],
    ids=["kto", "dpo-bco_pair", "dpo-simpo"],
)
def test_one_step_through_the_cli(capsys, tiny_model_dir, data, tmp_path, command, data_file, extra, metric):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, command, "--model_name_or_path", tiny_model_dir, "--dataset_name",
                                   data / data_file, "--output_dir", out, *ONE_STEP, *extra)
    assert code == 0, stderr[-3000:]
    assert json.loads(stdout[stdout.rindex("{\n"):])["global_step"] == 1  # the result, after transformers' own print
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metric in logged[0] and "loss" in logged[0]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    assert not (out / "margins").exists()  # the margin log belongs to posttrain's own losses


def test_kto_evaluates_held_out_rows_of_a_mixture(capsys, tiny_model_dir, data, tmp_path):
    """kto shares dpo's data and validation keys: a dataset_mixture, val_ratio, eval rows logged."""
    out = tmp_path / "out"
    mixture = f"[{{name: {data / 'labelled.jsonl'}}}, {{name: {data / 'pairs.jsonl'}, weight: 0.5}}]"
    code, _, stderr = run_cli(capsys, "kto", "--model_name_or_path", tiny_model_dir, "--dataset_mixture", mixture,
                              "--val_ratio", "0.25", "--output_dir", out, *ONE_STEP)
    assert code == 0, stderr[-3000:]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in row for row in logged)


@pytest.mark.parametrize(
    "argv, names",
    [
        (["dpo", "--loss_type", "exo_pair", "--label_smoothing", "0.001", "--beta_schedule", "beta_dpo"],
         ["'beta_schedule'", "loss_type exo_pair"]),
        (["dpo", "--loss_type", "simpo", "--precompute_ref_log_probs", "true"], ["'precompute_ref_log_probs'", "simpo"]),
        (["dpo", "--loss_type", "orpo", "--rpo_alpha", "1"], ["'rpo_alpha'", "orpo"]),
        (["dpo", "--loss_type", "sigmoid,bco_pair", "--loss_weights", "1"], ["'loss_weights'"]),
        (["dpo", "--loss_type", "exo_pair"], ["'label_smoothing'", "exo_pair"]),
        (["dpo", "--loss_type", "kto"], ["'loss_type'", "'kto'"]),
        (["dpo", "--trainer_args", "{ld_alpha: 0.5}"], ["trainer_args", "'ld_alpha'"]),
        (["kto", "--per_device_train_batch_size", "1"], ["'per_device_train_batch_size'", "kto"]),
        (["kto", "--beta_schedule", "beta_dpo"], ["'beta_schedule'"]),  # KTO's β is constant
    ],
    ids=["dynamic-beta-on-a-trl-loss", "simpo-with-reference", "orpo-with-rpo", "weights-mismatch", "exo-without-eps",
         "unknown-loss", "trl-loss-arg-on-posttrain-loss", "kto-batch-of-one", "kto-beta-schedule"],
)
def test_combinations_that_cannot_work(capsys, data, tmp_path, argv, names):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(capsys, *argv, "--dataset_name", data / "pairs.jsonl", "--output_dir", out)
    assert code == 2
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"posttrain {argv[0]}: error: ")
    for name in names:
        assert name in line, line
    assert not out.exists()
