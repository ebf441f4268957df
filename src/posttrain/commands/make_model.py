"""``posttrain make-model``: a small Qwen2 causal LM with a locally trained BPE tokenizer.

The result is an ordinary Hugging Face directory (config, safetensors weights, tokenizer with a
chat template), so every stage loads it with the same ``from_pretrained`` calls a user makes
with a hub id. Nothing is downloaded: the tokenizer is trained on text generated here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

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
    preset: Literal["tiny", "small"] = config_field("tiny", help="Model size preset.")
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


def train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with every digit its own token, ChatML specials and template."""
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
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(config: MakeModelConfig) -> dict:
    """Build, initialise and save the model; returns a summary (parameters, vocabulary)."""
    seed_everything(config.seed)
    tokenizer = train_tokenizer(config.vocab_size)
    model_config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **PRESETS[config.preset],
    )
    model = Qwen2ForCausalLM(model_config).to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    log.info(f"wrote a {parameters / 1e6:.2f}M-parameter Qwen2 ({config.preset}) with a {len(tokenizer)}-token vocabulary to {out}")
    return {"parameters": parameters, "vocab_size": len(tokenizer)}
