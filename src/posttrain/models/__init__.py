"""Loading models and tokenizers, and LoRA settings (the tiny offline model is built by
:mod:`posttrain.commands.make_model`)."""

from posttrain.models.loading import (
    ModelArguments,
    check_model_source,
    free_model,
    load_model,
    load_tokenizer,
    render_prompt,
)
from posttrain.models.lora import LoraArguments

__all__ = [
    "LoraArguments",
    "ModelArguments",
    "check_model_source",
    "free_model",
    "load_model",
    "load_tokenizer",
    "render_prompt",
]
