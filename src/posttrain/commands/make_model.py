"""``posttrain make-model``: a small causal LM (Qwen2 by default, or any of the decoder
architectures below) with a locally trained BPE tokenizer.

The result is an ordinary Hugging Face directory (config, safetensors weights, tokenizer with a
chat template), so every stage loads it with the same ``from_pretrained`` calls a user makes
with a hub id. Nothing is downloaded: the network is built from its transformers config class
with random weights, and the tokenizer is trained on text generated here. ``--architecture``
changes the network only; every architecture gets the same tokenizer and ChatML template (the
templates of real families are tried separately, in tests/conformance/test_templates.py), except
that families whose tokenizers ship without a pad token (Llama, Mistral, GPT-2) get none here
either, so that path is exercised too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from posttrain.config import config_field
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks.arithmetic import ArithmeticTask

log = get_logger(__name__)

# ChatML, as Qwen uses it, with {% generation %} markers around assistant replies so that
# TRL's assistant-only loss can find them.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

PRESETS = {
    # ~1.0M parameters: learns 2-digit addition with a scratchpad in CPU minutes.
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=384),
    # ~4.6M parameters: for longer CPU runs.
    "small": dict(hidden_size=256, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4, intermediate_size=768),
    # 10-30K parameters (by family), most of them the embeddings: for tests that only need every code path to run.
    "micro": dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=32),
}


@dataclass(frozen=True)
class Architecture:
    """How a preset's sizes become one family's transformers config."""

    model_type: str  # transformers' name for the config (AutoConfig.for_model)
    pad_token: bool = True  # whether the family's tokenizer ships a pad token
    explicit_head_dim: bool = True  # head_dim = hidden/heads (its default is a large model's, e.g. 128 or 256)
    extra: tuple[tuple[str, object], ...] = ()  # further config values, e.g. the number of experts

    def config(self, sizes: dict, **common):
        """The config of this family at ``sizes`` (a PRESETS entry); ``common`` as every family gets it."""
        values, positions = dict(sizes), common["max_position_embeddings"]
        if self.model_type == "gpt2":  # GPT-2 names its sizes differently and has no grouped-query attention
            values = {"n_embd": sizes["hidden_size"], "n_layer": sizes["num_hidden_layers"],
                      "n_head": sizes["num_attention_heads"], "n_inner": sizes["intermediate_size"],
                      "n_positions": common.pop("max_position_embeddings")}
        elif self.explicit_head_dim:
            values["head_dim"] = sizes["hidden_size"] // sizes["num_attention_heads"]
        rope = dict(getattr(AutoConfig.for_model(self.model_type), "rope_parameters", None) or {})
        if "original_max_position_embeddings" in rope:
            # A long-context family's YaRN scaling (GPT-OSS) keeps its factor over the shorter
            # context built here: the context before scaling shrinks with it.
            rope["original_max_position_embeddings"] = max(1, positions // int(rope["factor"]))
            values["rope_parameters"] = rope
        return AutoConfig.for_model(self.model_type, **values, **common, **dict(self.extra))


# The decoder families of the conformance matrix (docs/conformance.md); the names are transformers'
# model types, except gemma3 (its text-only model, gemma3_text).
_SLIDING = (("sliding_window", 64),)  # below the default 1024 positions, so both attention kinds are built
ARCHITECTURES = {
    "qwen2": Architecture("qwen2", explicit_head_dim=False),
    "llama": Architecture("llama", pad_token=False),
    "qwen3": Architecture("qwen3"),
    "qwen3_moe": Architecture("qwen3_moe", extra=(("num_experts", 4), ("num_experts_per_tok", 2), ("moe_intermediate_size", 16))),
    "mistral": Architecture("mistral", pad_token=False, extra=_SLIDING),
    "gemma2": Architecture("gemma2", extra=_SLIDING),
    "gemma3": Architecture("gemma3_text", extra=_SLIDING),
    "phi3": Architecture("phi3", explicit_head_dim=False),
    "gpt2": Architecture("gpt2", pad_token=False),
    "gpt_oss": Architecture("gpt_oss", extra=(*_SLIDING, ("num_local_experts", 4), ("num_experts_per_tok", 2))),
    "olmo2": Architecture("olmo2", explicit_head_dim=False),
}

# General English so that the tokenizer has merges for ordinary text, not only arithmetic.
_GENERAL_TEXT = """
Instruction: Response: END The following is feedback from your unsuccessful earlier attempt.
Correctly solve the original question. Correct solution: Hint: a correct solution is:
You are a helpful assistant. Answer the question. Which response is better, A or B?
What is the capital of France? Paris is the capital of France. Who wrote the letter? She did.
The quick brown fox jumps over the lazy dog. A model learns from data and improves with practice.
Please write a short story about a cat, a dog and a garden. Explain why the sky is blue in one sentence.
My name is Alice and my friend is called Bob. They went to the market on Monday to buy fresh bread.
The meeting is at noon. Thank you for your help! Yes, no, maybe. This is correct; that is wrong.
Step one, step two, step three. The final answer is given at the end. Please check your work.
"""


@dataclass
class MakeModelConfig:
    out: str = config_field("tiny-model", help="Directory to write the model and tokenizer to.")
    preset: Literal["tiny", "small", "micro"] = config_field("tiny", help="Model size preset.")
    architecture: Literal[tuple(ARCHITECTURES)] = config_field(
        "qwen2", help="Decoder family, built from its transformers config with random weights: " + ", ".join(ARCHITECTURES) + "."
    )
    vocab_size: int = config_field(1024, help="Largest BPE vocabulary (bytes and specials included; the built-in corpus fills about 600).", ge=300)
    max_position_embeddings: int = config_field(1024, help="Longest sequence the model accepts.", ge=64)
    seed: int = config_field(0, help="Seed for the weights.")


def _tokenizer_corpus() -> list[str]:
    task = ArithmeticTask()
    rows = task.make_dataset("train", n=3000)
    lines = [_GENERAL_TEXT] * 20
    for row in rows:
        lines.append(f"{row['prompt']}\n{row['completion']}")
        # The corpus is frozen: changing it changes the vocabulary, hence every model and every
        # measured figure. The hint and feedback phrasings below predate the SDPO reprompt
        # templates and the task's current feedback, and are written out here so they stay put.
        lines.append(f"{row['prompt']}\nHint: a correct solution is: {row['completion']}")
        lines.append(f"The final answer {row['answer'] + 1} is wrong; combine the column sums and the last carry.")
    return lines


def train_tokenizer(vocab_size: int, pad_token: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE with every digit its own token, ChatML specials and template; without a pad
    token when ``pad_token`` is false (``<|endoftext|>`` stays in the vocabulary)."""
    tokenizer = Tokenizer(models.BPE())
    # Digits first (one token each), then GPT-2 style byte-level splitting.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>" if pad_token else None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(config: MakeModelConfig) -> dict:
    """Build, initialise and save the model; returns a summary (parameters, vocabulary)."""
    seed_everything(config.seed)
    architecture = ARCHITECTURES[config.architecture]
    tokenizer = train_tokenizer(config.vocab_size, pad_token=architecture.pad_token)
    model_config = architecture.config(
        PRESETS[config.preset],
        vocab_size=len(tokenizer),
        max_position_embeddings=config.max_position_embeddings,
        # The tiny Qwen2 ties its embeddings, as Qwen2.5's small models do; other families keep
        # their config's default (tied for Gemma and GPT-2, untied for the rest), so both are built.
        **({"tie_word_embeddings": True} if config.architecture == "qwen2" else {}),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(model_config).to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    log.info(f"wrote a {parameters / 1e6:.2f}M-parameter {config.architecture} ({config.preset}) with a {len(tokenizer)}-token vocabulary to {out}")
    return {"parameters": parameters, "vocab_size": len(tokenizer)}
