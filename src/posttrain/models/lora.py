"""LoRA settings (defaults: r=16, alpha=32, dropout=0.1 on every projection)."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig

from posttrain.config import config_field

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraArguments:
    """LoRA/QLoRA options (names as in TRL's ``ModelConfig``)."""

    use_peft: bool = config_field(False, help="Train a LoRA adapter instead of all weights.")
    lora_r: int = config_field(16, help="LoRA rank.", ge=1)
    lora_alpha: int = config_field(32, help="LoRA scaling numerator (scale = alpha / r).", ge=1)
    lora_dropout: float = config_field(0.1, help="Dropout on the LoRA input.", ge=0.0, le=1.0)
    lora_target_modules: list[str] = config_field(list(ALL_PROJECTIONS), help="Module names that get adapters.")
    load_in_4bit: bool = config_field(False, help="QLoRA: quantise the frozen base to 4 bits (needs a CUDA GPU and bitsandbytes).")

    def lora_config(self, task_type: str = "CAUSAL_LM") -> LoraConfig | None:
        """The adapter's settings; ``task_type="SEQ_CLS"`` (a reward model) also trains and saves
        the score head in full (peft adds it to ``modules_to_save``), since it starts untrained."""
        if not self.use_peft:
            return None
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_target_modules),
            bias="none",
            task_type=task_type,
        )
