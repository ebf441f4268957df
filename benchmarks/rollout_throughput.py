"""Completion tokens per second: posttrain's batched rollouts vs a naive loop, in one process.

    python benchmarks/rollout_throughput.py [--model runs/quickstart/sft] [--prompts 64] [--samples 4]

Baseline: for each prompt, one ``model.generate`` call (its N samples via num_return_sequences),
the loop people write first. posttrain: ``generate`` over batches of prompts with left padding
and a KV cache. Both sample N completions per prompt with the same settings; throughput counts
the completion tokens actually generated (before end-of-sequence).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from posttrain.commands.make_model import MakeModelConfig, make_model
from posttrain.generation.sampling import generate
from posttrain.models import load_model, load_tokenizer, render_prompt
from posttrain.tasks import get_task


def naive_loop(model, tokenizer, prompts, samples, max_new_tokens) -> int:
    tokens = 0
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, do_sample=True, num_return_sequences=samples, max_new_tokens=max_new_tokens,
                                 top_k=0, pad_token_id=tokenizer.pad_token_id)
        new = out[:, ids.shape[1]:]
        ongoing = (new != tokenizer.pad_token_id) & (new != tokenizer.eos_token_id)
        tokens += int(ongoing.long().cumprod(dim=1).sum())
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="model directory (default: a fresh tiny model)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    model_dir = args.model or tempfile.mkdtemp(prefix="tiny-")
    if args.model is None:
        make_model(MakeModelConfig(out=model_dir))
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir)
    rows = get_task("arithmetic").make_dataset("test", n=args.prompts)
    prompts = [render_prompt(tokenizer, row["prompt"], base_model_mode=False) for row in rows]
    generate(model, tokenizer, prompts[:4], max_new_tokens=4, batch_size=4)  # warm-up

    torch.manual_seed(0)
    start = time.perf_counter()
    naive_tokens = naive_loop(model, tokenizer, prompts, args.samples, args.max_new_tokens)
    naive_seconds = time.perf_counter() - start

    torch.manual_seed(0)
    start = time.perf_counter()
    _, counts = generate(model, tokenizer, prompts, num_return_sequences=args.samples, do_sample=True,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, return_token_counts=True)
    batched_seconds = time.perf_counter() - start
    batched_tokens = sum(map(sum, counts))

    naive_rate, batched_rate = naive_tokens / naive_seconds, batched_tokens / batched_seconds
    print(f"model {model_dir}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.prompts} prompts x {args.samples} samples, max {args.max_new_tokens} new tokens")
    print(f"  naive loop (one prompt per call)   {naive_tokens:6d} tokens {naive_seconds:7.2f} s {naive_rate:8.1f} tok/s")
    print(f"  posttrain batched ({args.batch_size} prompts/call) {batched_tokens:6d} tokens {batched_seconds:7.2f} s {batched_rate:8.1f} tok/s")
    print(f"  speed-up: {batched_rate / naive_rate:.1f}x")


if __name__ == "__main__":
    main()
