"""The CLI: every command has --help; user errors are one line, exit 2, no traceback,
caught before a model is loaded, and leave nothing half-written."""

import subprocess
import sys

import pytest

from posttrain.cli import main
from posttrain.commands import COMMANDS
from posttrain.data.jsonl import write_jsonl


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in [*COMMANDS, "run"]:
        assert name in out


@pytest.mark.parametrize("name", [*COMMANDS, "run"])
def test_each_command_has_help(capsys, name):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: posttrain {name}" in out
    if name != "run":
        assert "config keys" in out and "--seed" in out or "--out" in out


@pytest.fixture
def sft_args(tiny_model_dir, tmp_path):
    return ["sft", "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "out"), "--max_steps", "1"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lerning_rate", "1e-4"], "unknown config key 'lerning_rate' in command line (did you mean 'learning_rate'?)"),
        (["--num_train_epochs", "three"], "config key 'num_train_epochs' in command line: expected float, got 'three'"),
        (["--learning_rate", "0"], "config key 'learning_rate' must be > 0, got 0.0"),
        (["--overlong", "maybe"], "config key 'overlong' in command line: must be one of truncate, error, got 'maybe'"),
        (["--model_name_or_path", "/no/such/model"], "model path /no/such/model does not exist"),
        (["--dataset_name", "/no/such/data.jsonl"], "/no/such/data.jsonl: no such file"),
        (["stray"], "unexpected argument 'stray' (overrides look like --key value)"),
    ],
)
def test_config_errors(capsys, sft_args, tmp_path, extra, message):
    code, out, err = run_cli(capsys, *sft_args, *extra)
    assert code == 2
    assert err.strip() == f"posttrain sft: error: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "compl', r"data.jsonl:2: invalid JSON"),
        (b'{"prompt": "a"}\n', r"data.jsonl:1: missing field 'completion'"),
        (b"", r"data.jsonl \(train\): no rows \(the dataset is empty\)"),
        (b'["not", "an", "object"]\n', r"data.jsonl:1: expected a JSON object, got list"),
        (b'{"prompt": 1, "completion": "b"}\n', r"data.jsonl:1: field 'prompt'\[0\] must be an object|data.jsonl:1: field 'prompt'"),
        (b'{"prompt": "a", "completion": "\xff"}\n', r"data.jsonl:1: not valid UTF-8"),
    ],
)
def test_data_errors_name_file_and_line(capsys, sft_args, tmp_path, content, message):
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    code, _, err = run_cli(capsys, *sft_args, "--dataset_name", str(data))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_overlong_prompt_rejected_when_configured(capsys, sft_args, tmp_path):
    data = tmp_path / "long.jsonl"
    write_jsonl(data, [{"prompt": "word " * 200, "completion": "ok"}])
    code, _, err = run_cli(capsys, *sft_args, "--dataset_name", str(data), "--max_length", "64", "--overlong", "error")
    assert code == 2
    assert "long.jsonl:1:" in err and "longer than max_length=64" in err


def test_invalid_yaml_names_file_and_line(capsys, sft_args, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-4\nnum_train_epochs: [1,\n")
    code, _, err = run_cli(capsys, *sft_args, "--config", str(bad))
    assert code == 2
    assert f"{bad}:" in err and "invalid YAML" in err


def test_config_file_plus_overrides(capsys, tmp_path, tiny_model_dir):
    from posttrain.config import load_config, parse_overrides
    from posttrain.trainers.sft import SFTJobConfig

    config_file = tmp_path / "sft.yaml"
    config_file.write_text(f"model_name_or_path: {tiny_model_dir}\nlearning_rate: 1.0e-4\nuse_peft: true\n")
    config = load_config(SFTJobConfig, path=config_file, overrides=parse_overrides(["--learning_rate", "5e-4", "--lora_r", "4"]))
    assert (config.learning_rate, config.use_peft, config.lora_r) == (5e-4, True, 4)


def test_run_reports_bad_pipeline(capsys, tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: x\nstages:\n  - name: a\n    command: teleport\n")
    code, _, err = run_cli(capsys, "run", str(pipeline))
    assert code == 2
    assert "unknown command 'teleport'" in err


@pytest.mark.slow
def test_console_script_errors_without_traceback(tmp_path):
    """The installed entry point behaves like main(): one line on stderr, exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "posttrain.cli", "eval", "--model_name_or_path", str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"posttrain eval: error: model path {tmp_path / 'missing'} does not exist"
    assert "Traceback" not in result.stderr
