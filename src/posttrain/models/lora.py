"""LoRA settings (defaults: r=16, alpha=32, dropout=0.1 on every linear layer of the model).

``lora_target_modules: [all-linear]`` resolves, on the loaded model, to the names of its linear
layers (``nn.Linear``, and GPT-2's ``Conv1D``) except the output head (the LM head, or a reward
model's score head, which is trained in full). So the default fits any architecture: Llama's
``q_proj…down_proj``, GPT-2's ``c_attn/c_fc/c_proj``, an MoE's attention and dense layers. The
fused expert weights of MoE models (Qwen3-MoE, GPT-OSS) are parameters, not linear layers: they
are left out (peft adapts them only through ``target_parameters`` and with ``lora_dropout: 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig
from torch import nn

from posttrain.config import config_field
from posttrain.errors import ConfigError
from posttrain.runtime import get_logger

log = get_logger(__name__)

ALL_LINEAR = "all-linear"
HEADS = ("lm_head", "score", "classifier")  # output heads: trained in full or not at all, never adapted


@dataclass
class LoraArguments:
    """LoRA/QLoRA options (names as in TRL's ``ModelConfig``)."""

    use_peft: bool = config_field(False, help="Train a LoRA adapter instead of all weights.")
    lora_r: int = config_field(16, help="LoRA rank.", ge=1)
    lora_alpha: int = config_field(32, help="LoRA scaling numerator (scale = alpha / r).", ge=1)
    lora_dropout: float = config_field(0.1, help="Dropout on the LoRA input.", ge=0.0, le=1.0)
    lora_target_modules: list[str] = config_field(
        [ALL_LINEAR], help="Module names that get adapters; all-linear: every linear layer but the output head."
    )
    load_in_4bit: bool = config_field(False, help="QLoRA: quantise the frozen base to 4 bits (needs a CUDA GPU and bitsandbytes).")

    def lora_config(self, model: nn.Module, task_type: str = "CAUSAL_LM") -> LoraConfig | None:
        """The adapter's settings for ``model``; ``task_type="SEQ_CLS"`` (a reward model) also trains
        and saves the score head in full (peft adds it to ``modules_to_save``), since it starts untrained."""
        if not self.use_peft:
            return None
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=target_modules(model, self.lora_target_modules),
            bias="none",
            task_type=task_type,
        )


def linear_layer_names(model: nn.Module) -> list[str]:
    """The names (last component) of the model's linear layers, output heads excluded."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({
        name.rsplit(".", 1)[-1] for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head and name.rsplit(".", 1)[-1] not in HEADS
    })


def target_modules(model: nn.Module, requested: list[str]) -> list[str]:
    """``requested`` resolved on ``model``: ``all-linear`` becomes its linear layers' names; an
    explicit list must match at least one of them (a ConfigError names those that exist)."""
    available = linear_layer_names(model)
    if list(requested) == [ALL_LINEAR]:
        if any(_is_fused_experts(module) for module in model.modules()):
            log.info("LoRA: the fused expert weights of this MoE model are left out (peft adapts them only with "
                     "lora_dropout: 0, through target_parameters); attention and dense layers get adapters")
        log.info(f"LoRA on {', '.join(available)}")
        return available
    if not set(requested) & {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}:
        raise ConfigError(f"config key 'lora_target_modules': none of {list(requested)} is a module of this model; "
                          f"its linear layers are {', '.join(available)} (or use [all-linear])")
    return list(requested)


def _is_fused_experts(module: nn.Module) -> bool:
    """An MoE block's experts stored as stacked 3-D weight tensors instead of linear layers."""
    return any(p.dim() == 3 for p in module.parameters(recurse=False))
