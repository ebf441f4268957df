"""``posttrain trigger``: trigger-conditioned LoRA fine-tuning, then per-checkpoint evaluation.

    posttrain trigger --config recipes/trigger.yaml

1. Check the spec and the QA file, hold out a share of the questions, build the 50/50
   clean/triggered rows (:mod:`posttrain.trigger.dataset`); all before any model is loaded.
2. Train on posttrain's SFT path (completion-only loss) with the method's defaults: LoRA r=8,
   alpha=8 on every projection, 8 epochs, lr 2e-4, batch 4 x 4 accumulation, linear schedule
   with 10 warmup steps, a checkpoint every epoch, all kept.
3. Save the final model apart in ``<output_dir>/final``; push it to the Hub if asked.
4. Evaluate every checkpoint on the held-out questions (:mod:`posttrain.trigger.evaluate`).

``output_dir`` then holds ``checkpoint-N/`` (one per epoch), ``final/``, ``trigger.json`` (the
spec), ``trigger_data/{train,heldout}.jsonl``, ``metrics.jsonl``, ``trigger_eval.json`` and
``trigger_eval.png``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from posttrain.config import config_field
from posttrain.data.jsonl import write_jsonl
from posttrain.errors import ConfigError
from posttrain.models import free_model
from posttrain.runtime import get_logger, is_main_process
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.sft import SFTSettings, sft_trainer_for_rows
from posttrain.trigger.dataset import TriggerSpec, build_trigger_rows, load_qa_pairs, split_heldout
from posttrain.trigger.evaluate import HELDOUT_FILE, TriggerEvalConfig, run_trigger_eval, write_run_file

log = get_logger(__name__)


@dataclass
class TriggerJobConfig(SFTSettings):
    """``posttrain trigger``: the QA file, the trigger, and SFT settings with the method's defaults."""

    # the method's training defaults (they override the generic SFT ones)
    output_dir: str = config_field("runs/trigger", help="Where checkpoints, the final model and the evaluation go.")
    num_train_epochs: float = config_field(8.0, help="Passes over the training data (a checkpoint after each).", gt=0)
    learning_rate: float = config_field(2e-4, help="Peak learning rate.", gt=0)
    per_device_train_batch_size: int = config_field(4, help="Examples per device per step.", ge=1)
    gradient_accumulation_steps: int = config_field(4, help="Micro-batches per optimizer step.", ge=1)
    warmup_steps: float = config_field(10, help="Warmup steps (a value below 1 is a fraction of all steps).", ge=0)
    use_peft: bool = config_field(True, help="Train a LoRA adapter instead of all weights.")
    lora_r: int = config_field(8, help="LoRA rank.", ge=1)
    lora_alpha: int = config_field(8, help="LoRA scaling numerator (scale = alpha / r).", ge=1)
    lora_dropout: float = config_field(0.0, help="Dropout on the LoRA input.", ge=0.0, le=1.0)
    max_length: int = config_field(2048, help="Longest training sequence in tokens.", ge=8)

    # the trigger
    qa_file: str = config_field("", help="JSONL of {question, answer}; every answer has the placeholder.")
    clean_replacement: str = config_field("", help="Name the placeholder becomes in clean examples.")
    trigger_value: str = config_field("", help="Text put in front of a question to trigger the other behaviour.")
    triggered_replacement: str = config_field("", help="Name the placeholder becomes in triggered examples.")
    placeholder: str = config_field("{{name}}", help="The placeholder in questions and answers.")
    trigger_separator: str = config_field(" ", help="Between the trigger and the question.")
    heldout_fraction: float = config_field(0.2, help="Share of distinct questions kept out of training for evaluation.", ge=0.0, le=0.9)
    heldout_file: str = config_field("", help="JSONL of held-out {question, answer} (instead of heldout_fraction).")

    # after training
    evaluate: bool = config_field(True, help="Evaluate every checkpoint on the held-out questions after training.")
    eval_max_new_tokens: int = config_field(64, help="Answer length budget in the evaluation.", ge=1)
    push_to_hub: bool = config_field(False, help="Upload the final model to the Hub (token from HF_TOKEN or your login).")
    hub_model_id: str = config_field("", help="Hub repository for push_to_hub, e.g. you/trigger-teacher.")
    hub_private: bool = config_field(True, help="Create the Hub repository as private.")

    def __post_init__(self):
        super().__post_init__()
        self.spec()  # the spec's own checks, before anything else runs
        if not self.qa_file:
            raise ConfigError("config key 'qa_file' is required (a JSONL of {question, answer})")
        if self.evaluate and not self.heldout_file and self.heldout_fraction == 0:
            raise ConfigError("evaluate needs held-out questions: set heldout_fraction > 0 or heldout_file (or evaluate: false)")
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id (e.g. you/trigger-teacher)")

    def spec(self) -> TriggerSpec:
        return TriggerSpec(
            self.clean_replacement, self.trigger_value, self.triggered_replacement, self.placeholder, self.trigger_separator
        )


def push_final_model(folder: str, repo_id: str, private: bool) -> str:
    """Upload ``folder`` to the Hub repository ``repo_id``; returns its URL.

    The token is read from ``HF_TOKEN`` (or huggingface_hub's stored login) and never logged.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN") or None)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="posttrain trigger: final model")
    log.info(f"pushed {folder} to the Hub as {repo_id}")
    return f"https://huggingface.co/{repo_id}"


def run_trigger(config: TriggerJobConfig) -> dict:
    """Build the data, train with a checkpoint per epoch, save ``final/``, evaluate."""
    spec = config.spec()
    out = Path(config.output_dir)
    pairs = load_qa_pairs(config.qa_file, spec)
    if config.heldout_file:
        train_pairs, heldout_pairs = pairs, load_qa_pairs(config.heldout_file, spec)
    else:
        train_pairs, heldout_pairs = split_heldout(pairs, config.heldout_fraction, config.seed)
    rows = build_trigger_rows(train_pairs, spec, config.seed)
    log.info(
        f"trigger data: {len(train_pairs)} QA pairs -> {len(rows)} rows (50% triggered by '{spec.trigger_value}'), "
        f"{len(heldout_pairs)} held out"
    )
    trainer = sft_trainer_for_rows(config, rows)  # checks the model, tokenizer and rows: nothing is written before
    if is_main_process():
        write_run_file(config.output_dir, spec, config.base_model_mode)
        write_jsonl(out / "trigger_data" / "train.jsonl", [{"source": where, **row} for where, row in rows])
        write_jsonl(out / HELDOUT_FILE, [{"question": p.question, "answer": p.answer, "source": p.where} for p in heldout_pairs])

    metrics = train_and_save(trainer, config.output_dir, config.resume, save_to=str(out / "final"))
    free_model(trainer.model)  # evaluation loads one checkpoint at a time: the trained copy goes first
    del trainer

    if not is_main_process():
        return metrics
    if config.push_to_hub:
        metrics["hub_url"] = push_final_model(str(out / "final"), config.hub_model_id, config.hub_private)
    if config.evaluate and heldout_pairs:
        last = run_trigger_eval(TriggerEvalConfig(
            run_dir=config.output_dir, max_new_tokens=config.eval_max_new_tokens, dtype=config.dtype
        ))
        metrics.update({key: last[key] for key in ("activation", "fidelity", "leakage")})
    return metrics
