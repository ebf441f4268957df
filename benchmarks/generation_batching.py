"""Batched generation (what `posttrain eval` does) against one prompt at a time, same process.

    python benchmarks/generation_batching.py [--prompts 128] [--batch-size 64]

Builds the tiny model, generates greedy completions for the same prompts both ways, checks the
texts agree, and prints wall time and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from posttrain.generation.sampling import generate
from posttrain.models import load_model, load_tokenizer, render_prompt
from posttrain.models.tiny import MakeModelConfig, make_model
from posttrain.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as model_dir:
        make_model(MakeModelConfig(out=model_dir))
        tokenizer, model = load_tokenizer(model_dir), load_model(model_dir)
        rows = get_task("arithmetic").make_dataset("test", n=args.prompts)
        prompts = [render_prompt(tokenizer, row["prompt"], base_model_mode=False) for row in rows]
        generate(model, tokenizer, prompts[:8], max_new_tokens=4, batch_size=8)  # warm-up

        timings, outputs = {}, {}
        for name, batch_size in (("one at a time (baseline)", 1), (f"batched ({args.batch_size})", args.batch_size)):
            start = time.perf_counter()
            outputs[name] = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=batch_size)
            timings[name] = time.perf_counter() - start

    baseline, batched = timings
    same = sum(a == b for a, b in zip(outputs[baseline], outputs[batched]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.prompts} prompts, "
          f"{args.max_new_tokens} new tokens each")
    for name, seconds in timings.items():
        print(f"  {name:28s} {seconds:7.2f} s   {args.prompts / seconds:7.1f} prompts/s")
    print(f"  speed-up: {timings[baseline] / timings[batched]:.1f}x; identical greedy outputs: {same}/{args.prompts}")


if __name__ == "__main__":
    main()
