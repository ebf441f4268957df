"""The CLI: every command has --help; user errors are one line, exit 2, no traceback,
caught before a model is loaded, and leave nothing half-written."""

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.config import config_field
from posttrain.data.jsonl import write_jsonl
from posttrain.registry import COMMANDS, Command


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
    from posttrain.commands.sft import SFTJobConfig
    from posttrain.config import load_config, parse_overrides

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


# -- posttrain run --list / --only / --from, on a fake fast command ------------------------------------


@dataclass
class _EchoConfig:
    output_dir: str = config_field("", help="out")
    source: str = config_field("", help="an upstream directory")
    value: int = config_field(0, help="a number")


@dataclass(frozen=True)
class _InlineCommand(Command):
    @property
    def config_cls(self):
        return _EchoConfig

    @property
    def run(self):
        return _echo


_ECHO_CALLS: list[str] = []


def _echo(config: _EchoConfig) -> dict:
    _ECHO_CALLS.append(Path(config.output_dir).name)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    return {"value": config.value}


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    _ECHO_CALLS.clear()
    monkeypatch.setitem(COMMANDS, "echo", _InlineCommand("echo", "test", "", "", "output_dir"))
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: demo\nstages:\n"
        "  - {name: first, command: echo, config: {value: 1}}\n"
        "  - {name: second, command: echo, config: {value: 2, source: '${first}'}}\n"
        "  - {name: third, command: echo, config: {value: 3, source: '${second}'}}\n"
    )
    return path


def _rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].split() == ["stage", "command", "status", "wall", "output_dir"]
    return [line.split() for line in lines[1:]]


def test_run_list_before_and_after_a_run_and_after_a_change(capsys, pipeline, tmp_path):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "run", str(pipeline), "--output-root", str(runs), "--list")
    assert code == 0, err
    assert _rows(out) == [
        [name, "echo", "pending", "-", str(runs / "demo" / name)] for name in ["first", "second", "third"]
    ]
    assert _ECHO_CALLS == [] and not runs.exists()

    assert run_cli(capsys, "run", str(pipeline), "--output-root", str(runs))[0] == 0
    manifest_path = runs / "demo" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["stages"][0].update(started_at="2024-05-01T10:00:00", finished_at="2024-05-01T10:02:05")
    manifest_path.write_text(json.dumps(manifest))
    code, out, _ = run_cli(capsys, "run", str(pipeline), "--output-root", str(runs), "--list")
    rows = _rows(out)
    assert [r[2] for r in rows] == ["done", "done", "done"]
    assert rows[0][3] == "125s" and all(re.fullmatch(r"\d+s", r[3]) for r in rows)

    pipeline.write_text(pipeline.read_text().replace("value: 2", "value: 22"))
    code, out, _ = run_cli(capsys, "run", str(pipeline), "--output-root", str(runs), "--list")
    assert code == 0
    assert [r[2] for r in _rows(out)] == ["done", "changed", "changed"]  # third references second
    assert _ECHO_CALLS == ["first", "second", "third"]  # only the one real run


def test_run_only_and_from(capsys, pipeline, tmp_path):
    runs = ["--output-root", str(tmp_path / "runs")]
    assert run_cli(capsys, "run", str(pipeline), *runs)[0] == 0
    _ECHO_CALLS.clear()
    assert run_cli(capsys, "run", str(pipeline), *runs, "--only", "second")[0] == 0
    assert _ECHO_CALLS == ["second"]
    _ECHO_CALLS.clear()
    assert run_cli(capsys, "run", str(pipeline), *runs, "--only", "third", "--only", "first")[0] == 0
    assert _ECHO_CALLS == ["first", "third"]
    _ECHO_CALLS.clear()
    assert run_cli(capsys, "run", str(pipeline), *runs, "--only", "first, third")[0] == 0
    assert _ECHO_CALLS == ["first", "third"]
    _ECHO_CALLS.clear()
    assert run_cli(capsys, "run", str(pipeline), *runs, "--from", "second")[0] == 0
    assert _ECHO_CALLS == ["second", "third"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "fourth"], "--only: unknown stage 'fourth' (stages: first, second, third)"),
        (["--from", "fourth"], "--from: unknown stage 'fourth' (stages: first, second, third)"),
        (["--only", "second"], "--only second: upstream stage 'first' is not done (it has not run); run it first or add it to --only"),
        (["--from", "third"], "--from third: earlier stage 'first' is not done (it has not run); use --from first, or run without --from"),
        (["--only", "first", "--from", "first"], "--only and --from cannot be combined"),
        (["--list", "--only", "first"], "--list runs nothing; it cannot be combined with --only or --from"),
    ],
)
def test_run_stage_selection_errors(capsys, pipeline, tmp_path, args, message):
    code, out, err = run_cli(capsys, "run", str(pipeline), "--output-root", str(tmp_path / "runs"), *args)
    assert code == 2
    assert err.strip() == f"posttrain run: error: {message}"
    assert _ECHO_CALLS == [] and not (tmp_path / "runs").exists()


def test_run_list_reports_bad_pipeline(capsys, tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: x\nstages:\n  - name: a\n    command: teleport\n")
    code, out, err = run_cli(capsys, "run", str(pipeline), "--list")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "unknown command 'teleport'" in err
