"""``posttrain export``: a LoRA adapter merged into its base, or a full model, saved with its
tokenizer and a model card; pushed through a mocked ``HfApi`` with the token from HF_TOKEN only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.cli import main
from posttrain.commands.export import ExportConfig, model_card, run_export
from posttrain.config import load_config
from posttrain.errors import ConfigError
from posttrain.pipeline import run_pipeline
from posttrain.registry import RUN_CONFIG_FILE

SECRET = "hf_exportSECRETtoken5e1d9a"
INPUT_TEXT = "What is 47 + 38?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished pipeline run: the tiny model, one LoRA and one full SFT step from it (a large
    learning rate, so the adapter moves the logits), and an eval of the LoRA model."""
    root = tmp_path_factory.mktemp("export-runs")
    pipeline = root / "mini.yaml"
    sft = {"model_name_or_path": "${model}", "max_steps": 1, "per_device_train_batch_size": 2,
           "dataset_train_split": "train[:4]", "learning_rate": 0.01, "max_length": 64}
    pipeline.write_text(yaml.safe_dump({"name": "mini", "stages": [
        {"name": "model", "command": "make-model"},
        {"name": "sft_lora", "command": "sft", "config": {**sft, "use_peft": True}},
        {"name": "sft_full", "command": "sft", "config": sft},
        {"name": "eval_lora", "command": "eval", "config": {"model_name_or_path": "${sft_lora}", "num_examples": 2,
                                                            "max_new_tokens": 4}},
    ]}))
    run_pipeline(pipeline, str(root / "runs"))
    return root / "runs" / "mini"


def logits(model_dir: Path) -> torch.Tensor:
    """The logits of the model in ``model_dir`` (with its own tokenizer) on INPUT_TEXT."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        return model(**tokenizer(INPUT_TEXT, return_tensors="pt")).logits


def export(model_dir, out, **values) -> dict:
    return run_export(load_config(ExportConfig, values={"model_dir": str(model_dir), "output_dir": str(out), **values}))


def test_a_lora_export_is_the_merged_model_with_the_adapter_models_logits(trained, tmp_path):
    from peft import PeftModel

    adapter = trained / "sft_lora"
    metrics = export(adapter, tmp_path / "out")
    out = tmp_path / "out"
    assert metrics["merged_lora"] is True
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert (out / "tokenizer.json").exists() and (out / "README.md").exists()

    tokenizer = AutoTokenizer.from_pretrained(trained / "model")
    inputs = tokenizer(INPUT_TEXT, return_tensors="pt")
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(trained / "model")
        base_logits = base(**inputs).logits
        with_adapter = PeftModel.from_pretrained(base, adapter)(**inputs).logits
        exported = AutoModelForCausalLM.from_pretrained(out)(**inputs).logits
    assert (with_adapter - base_logits).abs().max() > 1e-2  # the adapter matters, so the merge is tested
    torch.testing.assert_close(exported, with_adapter, atol=1e-5, rtol=1e-5)
    assert AutoTokenizer.from_pretrained(out)(INPUT_TEXT)["input_ids"] == inputs["input_ids"][0].tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left


def test_a_full_model_export_keeps_the_trained_weights(trained, tmp_path, capsys):
    code = main(["export", str(trained / "sft_full"), "--output_dir", str(tmp_path / "out")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["merged_lora"] is False and printed["output_dir"] == str(tmp_path / "out")
    torch.testing.assert_close(logits(tmp_path / "out"), logits(trained / "sft_full"), atol=0, rtol=0)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.use_cache  # training saved it off


def test_the_card_of_a_pipeline_stage_has_base_model_data_config_and_metrics(trained, tmp_path):
    export(trained / "sft_lora", tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "- sft\n" in card and "Trained with `posttrain sft`" in card and "LoRA adapter merged" in card
    assert f"- base model: `{trained / 'model'}`" in card
    assert "- training data: `task:arithmetic`, split `train[:4]`" in card

    config = yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])
    assert config["use_peft"] is True and config["learning_rate"] == 0.01 and config["max_steps"] == 1
    assert config["model_name_or_path"] == str(trained / "model")

    rows = [json.loads(line) for line in (trained / "sft_lora" / "metrics.jsonl").read_text().splitlines()]
    assert f"| train_loss | {rows[-1]['train_loss']:.4g} |" in card
    assert f"| loss | {[r for r in rows if 'loss' in r][-1]['loss']:.4g} |" in card
    accuracy = next(s for s in json.loads((trained / "manifest.json").read_text())["stages"] if s["name"] == "eval_lora")
    assert "pipeline stage `eval_lora`" in card and f"| accuracy | {accuracy['metrics']['accuracy']:.4g} |" in card
    assert f'from_pretrained("{tmp_path / "out"}")' in card


def test_the_card_says_what_was_not_recorded(trained, tmp_path):
    """With the pipeline file edited since, the card takes the config the trainer recorded next
    to its model; without that record, only the adapter's base model and metrics.jsonl are known
    and the full model's card names no base model."""
    copy = tmp_path / "runs" / "mini"
    shutil.copytree(trained, copy)
    pipeline = tmp_path / "mini.yaml"
    pipeline.write_text(Path(json.loads((trained / "manifest.json").read_text())["pipeline_file"]).read_text())
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "pipeline_file": str(pipeline)}))
    assert "Training config (pipeline stage `sft_lora`)" in model_card(copy / "sft_lora", "t", "t", merged=True)

    pipeline.write_text(pipeline.read_text().replace("learning_rate: 0.01", "learning_rate: 0.02"))
    card = model_card(copy / "sft_full", "t", "t", merged=False)
    assert "Training config (`posttrain_config.json`)" in card and "learning_rate: 0.01" in card
    assert f"- base model: `{trained / 'model'}`" in card and "- training data: `task:arithmetic`, split `train[:4]`" in card

    for stage in ("sft_lora", "sft_full"):
        (copy / stage / RUN_CONFIG_FILE).unlink()
    for stage, base in [("sft_lora", f"`{trained / 'model'}`"), ("sft_full", "not recorded")]:
        card = model_card(copy / stage, "t", "t", merged=stage == "sft_lora")
        assert f"- base model: {base}" in card
        assert "- training data: not recorded" in card and "Training config: not recorded" in card
        assert "| train_loss |" in card and "posttrain eval" not in card


@pytest.fixture
def hub(monkeypatch):
    """huggingface_hub.HfApi replaced by a recorder of what it is given."""
    calls = []

    class FakeApi:
        def __init__(self, token=None, **kwargs):
            calls.append(("init", {"token": token, **kwargs}))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", {**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())}))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    return calls


def test_push_hands_the_token_from_the_environment_to_hfapi_and_writes_it_nowhere(trained, tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    out = tmp_path / "out"
    code = main(["export", str(trained / "sft_lora"), "--output_dir", str(out), "--push_to_hub", "true",
                 "--hub_model_id", "someone/tiny-sft"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert hub == [
        ("init", {"token": SECRET}),
        ("create_repo", {"repo_id": "someone/tiny-sft", "private": True, "exist_ok": True}),
        ("upload_folder", {"folder_path": str(out), "repo_id": "someone/tiny-sft", "commit_message": "posttrain export",
                           "files": sorted(p.name for p in out.iterdir())}),
    ]
    assert json.loads(captured.out)["hub_url"] == "https://huggingface.co/someone/tiny-sft"
    card = (out / "README.md").read_text()
    assert "# someone/tiny-sft" in card and 'from_pretrained("someone/tiny-sft")' in card
    leaks = [p for root in (out, trained) for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaks == [] and SECRET not in captured.out + captured.err


def test_a_refused_push_is_one_line_and_keeps_the_export(trained, tmp_path, hub, monkeypatch, capsys):
    from huggingface_hub.errors import HfHubHTTPError

    def refuse(self, **kwargs):
        response = SimpleNamespace(headers={}, request=None)  # what the error reads of an HTTP response
        raise HfHubHTTPError("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create", response=response)

    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", refuse)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    out = tmp_path / "out"
    code = main(["export", str(trained / "sft_full"), "--output_dir", str(out), "--push_to_hub", "true",
                 "--hub_model_id", "someone/tiny-sft"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (f"posttrain export: error: exported to {out}, but the push to someone/tiny-sft failed: "
                                     "401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create")
    assert (out / "model.safetensors").exists() and SECRET not in "\n".join(err)


def test_push_without_hf_token_is_one_line_and_writes_nothing(trained, tmp_path, hub, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code = main(["export", str(trained / "sft_lora"), "--output_dir", str(tmp_path / "out"), "--push_to_hub", "true",
                 "--hub_model_id", "someone/tiny-sft"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == "posttrain export: error: push_to_hub needs a Hub token with write access in the HF_TOKEN environment variable"
    assert hub == [] and not (tmp_path / "out").exists()


def test_push_needs_a_repository():
    with pytest.raises(ConfigError, match="push_to_hub needs hub_model_id"):
        load_config(ExportConfig, values={"model_dir": "x", "push_to_hub": True})


@pytest.mark.parametrize("case", ["missing", "not a model", "output not empty"])
def test_bad_paths_are_one_line_naming_the_path(case, trained, tmp_path, capsys):
    model_dir, out = trained / "sft_full", tmp_path / "out"
    if case == "missing":
        model_dir = tmp_path / "no-such-run"
    elif case == "not a model":
        model_dir = tmp_path / "empty-run"
        model_dir.mkdir()
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    code = main(["export", str(model_dir), "--output_dir", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("posttrain export: error: ") and str(out if case == "output not empty" else model_dir) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left
    if case == "output not empty":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
    else:
        assert not out.exists()


def test_help_lists_the_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "usage: posttrain export [MODEL_DIR]" in out
    for key in ("--model_dir", "--output_dir", "--dtype", "--push_to_hub", "--hub_model_id", "--hub_private"):
        assert key in out
