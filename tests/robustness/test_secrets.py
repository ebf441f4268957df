"""Secrets: API keys and hub tokens come only from the environment and never appear in logs,
configs saved with runs, caches, summaries, reports or error messages.

The jobs here really use the key (the local chat-completions server checks the Authorization
header it receives), then every file they wrote and everything they printed or logged is searched
for the secret values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

import posttrain.judges.openai as openai_module
from posttrain.cli import main
from posttrain.commands.pairs import PairsConfig
from posttrain.config import load_config
from posttrain.errors import ConfigError
from posttrain.tasks.arithmetic import solve

OPENAI_KEY = "sk-posttrain-SECRET-a8f3e1c07b"
HF_TOKEN = "hf_posttrainSECRETd41c9b2e6f"
SECRETS = (OPENAI_KEY, HF_TOKEN)
VERDICTS = [{"better": "A", "confidence": 0.8, "reason": "A is correct."},  # each pair is asked in both orders:
            {"better": "B", "confidence": 0.8, "reason": "B is correct."}]  # the same response wins both


@pytest.fixture
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)


@pytest.fixture
def logs(caplog):
    """Everything logged: the ``posttrain`` logger (it does not propagate) and the root logger."""
    logger = logging.getLogger("posttrain")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="posttrain")
    yield caplog
    logger.removeHandler(caplog.handler)


def leaks(roots: list[Path], *texts: str) -> list[str]:
    """Where a secret value appears: files (any content, any depth) under ``roots`` and ``texts``."""
    found = []
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {secret[:6]}..." for secret in SECRETS if secret.encode() in data]
    for index, text in enumerate(texts):
        found += [f"captured output {index}: {secret[:6]}..." for secret in SECRETS if secret in text]
    return found


def file_count(root: Path) -> int:
    return sum(1 for path in Path(root).rglob("*") if path.is_file())


def write_rollouts(path: Path) -> Path:
    rows = [
        {"id": f"p{i}", "prompt": f"What is {a} + {b}?", "fields": {"a": a, "b": b, "answer": a + b},
         "completions": [solve(a, b, 2), f"Answer: {a + b + 1}"]}
        for i, (a, b) in enumerate([(12, 30), (7, 8)])
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def authorized(api) -> bool:
    """Every request the server got carried the key: the job really used it."""
    return bool(api.requests) and all(r["headers"].get("Authorization") == f"Bearer {OPENAI_KEY}" for r in api.requests)


# ---------------------------------------------------------------------------------------------
# jobs that use the key


def test_pairs_with_an_api_judge(api, secrets_in_env, logs, capsys, tmp_path, outcome):
    """`posttrain pairs` with the OpenAI-compatible judge: the key is used, then searched for everywhere"""
    for index in range(20):
        api.chat(VERDICTS[index % 2])
    rollouts = write_rollouts(tmp_path / "rollouts.jsonl")
    out = tmp_path / "pairs"
    code = main(["pairs", "--rollouts", str(rollouts), "--output_dir", str(out), "--judge", "openai",
                 "--judge_base_url", api.url, "--judge_model", "judge-model"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert authorized(api)
    assert (out / "pairs.jsonl").exists() and list((out / "judge_cache").iterdir())
    found = leaks([tmp_path], captured.out, captured.err, logs.text)
    assert found == [], found
    outcome(f"exit 0; {len(api.requests)} requests with the key; {file_count(tmp_path)} files "
            "(pairs, summary, judge cache), stdout, stderr and logs: no secret")


@pytest.mark.slow
def test_pipeline_with_a_model_and_an_api_judge(api, secrets_in_env, logs, capsys, tmp_path, tiny_model_dir, outcome):
    """A pipeline (rollouts of the tiny model, pairs judged over the API): manifest, report, caches, logs"""
    from posttrain.pipeline import run_pipeline

    for index in range(40):
        api.chat(VERDICTS[index % 2])
    pipeline = {
        "name": "secrets",
        "stages": [
            {"name": "rollouts", "command": "rollout",
             "config": {"model_name_or_path": tiny_model_dir, "dataset_name": "task:arithmetic",
                        "dataset_split": "train[:3]", "num_samples": 2, "max_new_tokens": 8, "seed": 0}},
            {"name": "pairs", "command": "pairs",
             "config": {"rollouts": "${rollouts}/rollouts.jsonl", "judge": "openai", "judge_base_url": api.url,
                        "judge_model": "judge-model"}},
        ],
    }
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    manifest = run_pipeline(path, str(tmp_path / "runs"))
    captured = capsys.readouterr()
    assert [stage["status"] for stage in manifest["stages"]] == ["done", "done"]
    assert authorized(api)
    root = tmp_path / "runs" / "secrets"
    assert (root / "manifest.json").exists() and (root / "report.md").exists()
    found = leaks([tmp_path], captured.out, captured.err, logs.text)
    assert found == [], found
    outcome(f"both stages done; {len(api.requests)} API requests with the key; {file_count(root)} files under the run "
            "(manifest, report, summary, rollouts, pairs, judge cache) and all output: no secret")


@pytest.mark.parametrize("status, replies", [(401, 1), (503, 5)], ids=["401-unauthorized", "retries-exhausted"])
def test_judge_errors_name_the_url_not_the_key(api, secrets_in_env, logs, capsys, tmp_path, monkeypatch, outcome,
                                              status, replies):
    """Judge errors (401, retries exhausted) through the CLI: the message names the URL, never the key"""

    class NoWaitJudge(openai_module.OpenAIJudge):  # the backoff would wait 15 s for nothing
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "sleep": lambda seconds: None})

    monkeypatch.setattr(openai_module, "OpenAIJudge", NoWaitJudge)
    for _ in range(replies):  # some servers echo the key they were given
        api.reply(status, {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}"}})
    rollouts = write_rollouts(tmp_path / "rollouts.jsonl")
    code = main(["pairs", "--rollouts", str(rollouts), "--output_dir", str(tmp_path / "pairs"), "--judge", "openai",
                 "--judge_base_url", api.url, "--judge_model", "judge-model"])
    captured = capsys.readouterr()
    assert code == 2
    assert authorized(api) and len(api.requests) == replies
    message = captured.err.strip().splitlines()[-1]
    assert f"{api.url}/chat/completions" in message and str(status) in message
    found = leaks([tmp_path], captured.out, captured.err, logs.text)
    assert found == [], found
    outcome(f"exit 2 after {replies} request(s); {message[:150]}; no secret in output, logs or files")


# ---------------------------------------------------------------------------------------------
# configs that try to carry a secret


JOB_CONFIGS = {  # command: the minimal other keys
    "sft": {},
    "dpo": {"dataset_name": "pairs.jsonl"},
    "sdpo": {},
    "grpo": {},
}


@pytest.mark.parametrize("command", list(JOB_CONFIGS))
@pytest.mark.parametrize("key", ["hub_token", "push_to_hub_token"])
def test_token_in_trainer_args_is_refused(secrets_in_env, capsys, tmp_path, outcome, command, key):
    """A config carrying a hub token (`trainer_args: {hub_token: ...}`) is refused before anything runs"""
    out = tmp_path / "out"
    config = {"model_name_or_path": str(tmp_path / "no-model"), "output_dir": str(out),
              "trainer_args": {key: HF_TOKEN}, **JOB_CONFIGS[command]}
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    code = main([command, "--config", str(path)])
    captured = capsys.readouterr()
    assert code == 2
    message = captured.err.strip().splitlines()[-1]
    assert f"'{key}' is not accepted" in message and "set HF_TOKEN in the environment" in message
    assert HF_TOKEN not in captured.out + captured.err
    assert not out.exists(), "something ran before the config was refused"
    outcome(f"exit 2, nothing written; {message[:160]}")


def test_token_set_after_loading_is_refused_by_trl_kwargs(outcome):
    """A hub token put into trainer_args after the config was loaded is refused when the trainer's arguments are built"""
    from trl import SFTConfig

    from posttrain.commands.sft import SFTJobConfig

    config = load_config(SFTJobConfig, values={"model_name_or_path": "x"})
    config.trainer_args = {"hub_token": HF_TOKEN}
    with pytest.raises(ConfigError, match="set HF_TOKEN in the environment") as err:
        config.trl_kwargs(SFTConfig)
    assert HF_TOKEN not in str(err.value)
    outcome(f"ConfigError: {err.value}")


@pytest.mark.parametrize("key", ["api_key", "openai_api_key", "hf_token", "judge_api_key", "token"])
def test_unknown_secret_keys_are_refused(secrets_in_env, capsys, tmp_path, outcome, key):
    """A config key meant to carry a secret (`api_key: ...`) is an unknown key: refused, its value never echoed"""
    path = tmp_path / "pairs.yaml"
    path.write_text(yaml.safe_dump({"rollouts": "r.jsonl", "judge": "openai", key: OPENAI_KEY}), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'") as err:
        load_config(PairsConfig, path=path)
    assert OPENAI_KEY not in str(err.value)
    code = main(["pairs", "--rollouts", "r.jsonl", "--output_dir", str(tmp_path / "out"), f"--{key}", OPENAI_KEY])
    captured = capsys.readouterr()
    assert code == 2 and f"unknown config key '{key}'" in captured.err
    assert OPENAI_KEY not in captured.out + captured.err and not (tmp_path / "out").exists()
    outcome(f"ConfigError from the file and exit 2 from the command line: {err.value}")


# ---------------------------------------------------------------------------------------------
# the hub token


def test_hub_push_takes_the_token_from_the_environment(secrets_in_env, logs, monkeypatch, tmp_path, outcome):
    """Pushing a model to the Hub: HF_TOKEN goes to the client and nowhere else"""
    import huggingface_hub

    from posttrain.trigger.train import push_final_model

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    folder = tmp_path / "final"
    folder.mkdir()
    url = push_final_model(str(folder), "someone/model", private=True)
    assert calls[0] == ("token", HF_TOKEN)
    assert HF_TOKEN not in repr(calls[1:]) and HF_TOKEN not in url
    assert leaks([tmp_path], logs.text) == []
    assert "someone/model" in logs.text
    outcome("HfApi(token=$HF_TOKEN); the repository calls, the log line and the returned URL hold no token")
