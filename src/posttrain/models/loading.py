"""The one place posttrain loads models and tokenizers, from a hub id or a local directory.

Base-model mode (the "contamination guard") removes the chat template and never adds special
tokens, so no chat markup can leak into a model that was never chat-tuned.
"""

from __future__ import annotations

import gc
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from posttrain.config import config_field
from posttrain.data.base_format import base_prompt
from posttrain.data.chat import render_generation_prompt
from posttrain.errors import PosttrainError
from posttrain.runtime import get_logger

log = get_logger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ModelArguments:
    """Which model to load and how (names as in TRL's ``ModelConfig``)."""

    model_name_or_path: str = config_field("", help="Hub id or local directory of the model to train or evaluate.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = config_field(
        "float32", help="Weights dtype; 'auto' uses the one saved with the model."
    )
    trust_remote_code: bool = config_field(False, help="Allow model code from the hub (off: only transformers' own code runs).")
    base_model_mode: bool = config_field(
        False, help="Base (not chat-tuned) model: Instruction/Response/END format, no chat template, no special tokens."
    )
    chat_template_kwargs: dict = config_field(
        {}, help="Extra chat-template arguments for every conversation rendered (e.g. enable_thinking: false)."
    )


def check_model_source(name_or_path: str) -> None:
    """Fail early (before any training work) when a local model directory does not exist."""
    if not name_or_path:
        raise PosttrainError("model_name_or_path is empty: set it in the config or with --model_name_or_path")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise PosttrainError(f"{name_or_path} is not a model directory (no config.json or adapter_config.json)")
        return
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if not _HUB_ID.match(name_or_path) or name_or_path.startswith((".", "/", "~")) or offline:
        raise PosttrainError(f"model path {name_or_path} does not exist")


def load_tokenizer(name_or_path: str, base_model_mode: bool = False, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer; make sure it can pad; in base-model mode drop its chat template."""
    check_model_source(name_or_path)
    source = _adapter_base(name_or_path) if not _has_tokenizer(name_or_path) else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise PosttrainError(f"cannot load a tokenizer from {source}: {str(err).splitlines()[0]}") from None
    if tokenizer.eos_token is None:
        raise PosttrainError(f"the tokenizer of {source} has no eos_token; set one in its tokenizer_config.json")
    if tokenizer.pad_token is None:
        log.warning(f"the tokenizer of {source} has no pad token; using eos ({tokenizer.eos_token}) for padding")
        tokenizer.pad_token = tokenizer.eos_token
    if base_model_mode:
        tokenizer.chat_template = None
    return tokenizer


def generation_device() -> str:
    """Where a model that only generates goes: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False, device: str | None = None) -> PreTrainedModel:
    """Load a causal LM. A directory holding a LoRA adapter loads its base model with the
    adapter merged in (for evaluation and generation)."""
    check_model_source(name_or_path)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        if _is_adapter(name_or_path):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(
                _adapter_base(name_or_path), dtype=torch_dtype, trust_remote_code=trust_remote_code
            )
            model = PeftModel.from_pretrained(base, name_or_path).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise PosttrainError(f"cannot load a model from {name_or_path}: {str(err).splitlines()[0]}") from None
    if device is not None:
        model.to(device)
    return model


def load_reward_model(name_or_path: str, dtype: str = "float32", trust_remote_code: bool = False) -> PreTrainedModel:
    """A sequence-classification model with one output, the reward, to train from a checkpoint.

    A causal LM keeps its backbone, drops its LM head and gets a new score head (seeded by the
    caller's ``seed_everything``); TRL's context hides transformers' report of exactly those two
    keys. A LoRA adapter is refused: it would be merged into a causal LM, not a reward model.
    """
    check_model_source(name_or_path)
    if _is_adapter(name_or_path):
        raise PosttrainError(
            f"{name_or_path} holds a LoRA adapter: merge it into its base first (posttrain export {name_or_path} "
            "--output_dir DIR) and start the reward model from DIR"
        )
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        with suppress_seqcls_warning():
            return AutoModelForSequenceClassification.from_pretrained(
                name_or_path, num_labels=1, dtype=torch_dtype, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a classifier head of another size
        raise PosttrainError(f"cannot load a reward model from {name_or_path}: {str(err).splitlines()[0]}") from None


def free_model(model: PreTrainedModel | None) -> None:
    """Release a model's weights now, even while callers still hold references to it (evaluation
    holds one model at a time). The model is unusable afterwards."""
    if model is not None:
        try:
            model.to("meta")  # drops every parameter's and buffer's storage
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # quantized or dispatched models refuse .to(); they go with their last reference
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], base_model_mode: bool, chat_template_kwargs: dict | None = None
) -> str:
    """The text a model is asked to continue: the chat template with a generation prompt (system
    turns kept, ``chat_template_kwargs`` such as ``enable_thinking`` passed on), or
    ``Instruction: X\\nResponse:`` in base-model mode."""
    if base_model_mode:
        if not isinstance(prompt, str):
            raise PosttrainError("base_model_mode needs plain-text prompts, got a list of messages")
        return base_prompt(prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return render_generation_prompt(tokenizer, messages, chat_template_kwargs=chat_template_kwargs)


def _is_adapter(name_or_path: str) -> bool:
    return (Path(name_or_path) / "adapter_config.json").exists()


def _has_tokenizer(name_or_path: str) -> bool:
    path = Path(name_or_path)
    return not path.exists() or (path / "tokenizer_config.json").exists()


def _adapter_base(name_or_path: str) -> str:
    config = json.loads((Path(name_or_path) / "adapter_config.json").read_text())
    return config["base_model_name_or_path"]


def load_model_for_training(config) -> PreTrainedModel:
    """The model a trainer starts from: ``config`` has ModelArguments and LoraArguments fields.

    QLoRA (``load_in_4bit``) quantises the frozen base with bitsandbytes; it needs a CUDA GPU.
    """
    if not getattr(config, "load_in_4bit", False):
        return load_model(config.model_name_or_path, config.dtype, config.trust_remote_code)
    if not torch.cuda.is_available():
        raise PosttrainError("load_in_4bit (QLoRA) needs a CUDA GPU; this machine has none")
    if not config.use_peft:
        raise PosttrainError("load_in_4bit trains a LoRA adapter on a frozen 4-bit base: set use_peft: true")
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        config.model_name_or_path,
        quantization_config=quantization,
        dtype=torch.bfloat16,
        trust_remote_code=config.trust_remote_code,
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
