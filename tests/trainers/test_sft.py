"""posttrain sft on TRL's SFTTrainer: labels, learning, checkpoints, resume, LoRA, base mode."""

import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain.commands.sft import SFTJobConfig, build_sft_trainer, run_sft
from posttrain.config import load_config
from posttrain.data.jsonl import write_jsonl

pytestmark = pytest.mark.slow


def sft_config(model_dir, out, **values):
    defaults = dict(
        model_name_or_path=model_dir,
        output_dir=str(out),
        dataset_train_split="train[:64]",
        num_train_epochs=2,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        logging_steps=1,
        seed=0,
    )
    return load_config(SFTJobConfig, values={**defaults, **values})


def test_trainer_labels_cover_only_the_response(tiny_model_dir, tmp_path):
    trainer = build_sft_trainer(sft_config(tiny_model_dir, tmp_path / "out"))
    tokenizer = trainer.processing_class
    row = trainer.train_dataset[0]
    labelled = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    masked = [t for t, label in zip(row["input_ids"], row["labels"]) if label == -100]
    first_labelled = row["labels"].index(next(label for label in row["labels"] if label != -100))
    assert tokenizer.decode(masked).startswith("<|im_start|>user\nWhat is ")
    assert tokenizer.decode(row["input_ids"][:first_labelled]).endswith("<|im_start|>assistant\n")
    # the reply through its end-of-turn token, which the template's generation markers close on
    assert "Answer:" in tokenizer.decode(labelled) and tokenizer.decode(labelled).endswith("<|im_end|>")
    # the collator keeps the masking (and pads labels with -100)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    first = batch["labels"][0][: len(row["labels"])]
    assert first.tolist() == row["labels"]


def test_sft_learns_and_checkpoints_every_epoch(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    metrics = run_sft(sft_config(tiny_model_dir, out, num_train_epochs=3))
    assert metrics["global_step"] == 12  # 64 rows / 16 per step * 3 epochs
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-4", "checkpoint-8"]
    losses = [row["loss"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert losses[-1] < 0.5 * losses[0]
    assert (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists()



def test_resume_continues_to_the_same_weights(tiny_model_dir, tmp_path, stop_after_checkpoint):
    run_sft(sft_config(tiny_model_dir, tmp_path / "straight"))

    interrupted = sft_config(tiny_model_dir, tmp_path / "resumed")
    trainer = build_sft_trainer(interrupted)
    trainer.add_callback(stop_after_checkpoint(4))
    trainer.train()
    assert trainer.state.global_step == 4
    interrupted.resume = True
    metrics = run_sft(interrupted)
    assert metrics["global_step"] == 8

    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-4, atol=1e-5)


def test_lora_sft_saves_an_adapter_that_loads(tiny_model_dir, tmp_path):
    from posttrain.models import load_model

    out = tmp_path / "lora"
    run_sft(sft_config(tiny_model_dir, out, use_peft=True, lora_r=4, lora_alpha=8, max_steps=2))
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) >= {"q_proj", "down_proj"}
    assert not (out / "model.safetensors").exists()
    model = load_model(str(out))
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size


def test_base_model_mode_trains_on_instruction_format(tiny_model_dir, tmp_path):
    data = tmp_path / "base.jsonl"
    write_jsonl(data, [{"prompt": f"Repeat {i}.", "completion": f"{i}"} for i in range(32)])
    config = sft_config(tiny_model_dir, tmp_path / "base", dataset_name=str(data), dataset_train_split="train",
                        base_model_mode=True, max_steps=2)
    trainer = build_sft_trainer(config)
    text = trainer.processing_class.decode(trainer.train_dataset[0]["input_ids"])
    assert text.startswith("Instruction: Repeat") and text.endswith("\nEND")
    assert "<|im_start|>" not in text
    run_sft(config)
    saved = json.loads((tmp_path / "base" / "tokenizer_config.json").read_text())
    assert saved.get("chat_template") is None and not (tmp_path / "base" / "chat_template.jinja").exists()


def test_unknown_trainer_arg_fails_before_loading(tiny_model_dir, tmp_path):
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'not_a_field' in trainer_args"):
        build_sft_trainer(sft_config(tiny_model_dir, tmp_path / "x", trainer_args={"not_a_field": 1}))


def test_report_to_tensorboard_writes_event_files_offline(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    run_sft(sft_config(tiny_model_dir, out, max_steps=3, report_to="tensorboard"))
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file under output_dir"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    assert [e.step for e in accumulator.Scalars("train/loss")] == [1, 2, 3]


def test_report_to_a_tracker_that_is_not_installed_fails_before_training(tiny_model_dir, tmp_path, monkeypatch):
    import transformers.integrations

    from posttrain.errors import ConfigError

    monkeypatch.setattr(transformers.integrations, "get_available_reporting_integrations", lambda: ["tensorboard"])
    with pytest.raises(ConfigError, match=r"config key 'report_to': 'wandb' is not installed \(pip install wandb\)"):
        build_sft_trainer(sft_config(tiny_model_dir, tmp_path / "x", report_to="tensorboard,wandb"))
    assert not (tmp_path / "x").exists()
