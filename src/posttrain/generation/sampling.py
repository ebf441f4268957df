"""Batched generation with Hugging Face ``generate`` (KV cache, left padding, stop strings)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from posttrain.runtime import is_main_process


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    num_return_sequences: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    stop_strings: list[str] | None = None,
    desc: str = "generating",
    return_token_counts: bool = False,
    keep_stop_strings: bool = False,
) -> list[list[str]] | tuple[list[list[str]], list[list[int]]]:
    """Complete each rendered prompt; returns ``num_return_sequences`` texts per prompt.

    Prompts must already be rendered (chat template or base format) and are tokenized without
    adding special tokens. Completions are cut before the first stop string (unless
    ``keep_stop_strings``, for callers that need to know whether one was written). With
    ``return_token_counts``, also returns how many tokens each completion generated (up to, not
    including, the first end-of-sequence or padding token).
    """
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    outputs: list[list[str]] = []
    counts: list[list[int]] = []
    try:
        single_batch = len(prompts) <= batch_size  # the caller shows progress already
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not is_main_process() or single_batch):
            batch = prompts[start : start + batch_size]
            encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            sampling = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
            with torch.inference_mode():
                tokens = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    num_return_sequences=num_return_sequences,
                    pad_token_id=tokenizer.pad_token_id,
                    stop_strings=stop_strings or None,
                    tokenizer=tokenizer if stop_strings else None,
                    use_cache=True,
                    **sampling,
                )
            # tokens: (batch * num_return_sequences, prompt_len + new_len)
            new_tokens = tokens[:, encoded["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            if not keep_stop_strings:
                texts = [cut_at_stop(text, stop_strings) for text in texts]
            ongoing = (new_tokens != tokenizer.pad_token_id) & (new_tokens != tokenizer.eos_token_id)
            lengths = ongoing.long().cumprod(dim=1).sum(dim=1).tolist()  # tokens before the first eos/pad
            for i in range(len(batch)):
                group = slice(i * num_return_sequences, (i + 1) * num_return_sequences)
                outputs.append(texts[group])
                counts.append(lengths[group])
    finally:
        tokenizer.padding_side = padding_side
    return (outputs, counts) if return_token_counts else outputs


def cut_at_stop(text: str, stop_strings: list[str] | None) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for stop in stop_strings or []:
        index = text.find(stop)
        if index >= 0:
            cut = min(cut, index)
    return text[:cut]
