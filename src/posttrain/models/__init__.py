"""Loading models and tokenizers, LoRA settings, and the tiny offline model."""

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
