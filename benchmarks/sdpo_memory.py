"""Peak memory and seconds per step of SDPO vs GRPO at real vocabularies and completion lengths,
side by side in one run.

    python benchmarks/sdpo_memory.py [--vocab 598 32768 151936] [--lengths 256 1024 4096]
                                     [--plot docs/sdpo_memory.png]

For each vocabulary size V a random Qwen2 is built (``make-model``'s tiny model, its embeddings
resized to V; the tiny tokenizer decodes what it knows). Each cell is one fresh process that runs
two optimizer steps of 8 completions (G = 4) that all run to ``max_completion_length``, on the
arithmetic task, whose verifier gives every failed sample feedback: every sample is distilled.
The completions are random tokens of the tokenizer's vocabulary: sampling 4,096 tokens from a
152k-vocabulary model takes minutes on a CPU, costs both methods the same, and is not what is
measured here (``--generate`` samples from the model instead, ``min_new_tokens`` keeping the length).
The methods:

* ``grpo``: ``posttrain grpo`` (TRL's GRPOTrainer, whose fused LM head computes log-probs in tiles);
* ``sdpo``: ``posttrain sdpo --teacher frozen``, distilling ``distillation_chunk_size`` tokens at a time;
* ``sdpo-full``: the same, made to take the full-logits path (what SDPO did before chunking, and
  what it still does for a model whose head is not reproduced outside its forward); only where
  its ``(B, T, V)`` tensors fit this machine.

Memory is the process's peak resident set (``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated``
on a GPU (``--bf16`` there); ``loaded`` is the process with the model loaded, before training. Time is the second
step's forward and backward (the step minus its generation). Ratios are against ``grpo`` of the same V and T.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("grpo", "sdpo", "sdpo-full")
BATCH, GENERATIONS = 8, 4


def build_model(vocab: int, directory: Path) -> Path:
    """The tiny model with its vocabulary resized to ``vocab`` (random new rows)."""
    import torch

    from posttrain.commands.make_model import MakeModelConfig, make_model
    from posttrain.models import load_model, load_tokenizer

    out = directory / f"qwen2-v{vocab}"
    make_model(MakeModelConfig(out=str(out)))
    model = load_model(str(out))
    if vocab != model.get_input_embeddings().weight.shape[0]:
        torch.manual_seed(0)
        model.resize_token_embeddings(vocab, mean_resizing=False)
        model.save_pretrained(out)
        load_tokenizer(str(out)).save_pretrained(out)
    return out


def full_logits_bytes(vocab: int, length: int) -> int:
    """One float32 ``(B, T, V)`` tensor."""
    return BATCH * length * vocab * 4


def random_completions(trainer, length: int):
    """A stand-in for the trainer's sampling: ``length`` random non-special tokens per sample."""
    import torch

    tokenizer = trainer.processing_class
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    generator = torch.Generator().manual_seed(0)

    def generate(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        picks = torch.randint(len(allowed), (len(prompt_ids), length), generator=generator)
        return allowed[picks].tolist(), None

    return generate


def run_cell(method: str, model_dir: str, length: int, chunk: int, sample: bool, bf16: bool = False) -> dict:
    """One cell, in this (fresh) process: two steps; peak memory and the second step's training time."""
    import torch
    from transformers import TrainerCallback

    from posttrain.commands.sdpo import GRPOJobConfig, SDPOJobConfig, build_sdpo_trainer

    torch.manual_seed(0)
    cls = GRPOJobConfig if method == "grpo" else SDPOJobConfig
    extra = {} if method == "grpo" else {"teacher": "frozen", "distillation_chunk_size": chunk}
    with tempfile.TemporaryDirectory() as out:
        config = cls(
            model_name_or_path=model_dir, output_dir=out, dataset_name="task:arithmetic", dataset_train_split="train[:64]",
            max_steps=2, per_device_train_batch_size=BATCH, num_generations=GENERATIONS, max_completion_length=length,
            learning_rate=1e-5, logging_steps=1000, save_strategy="no", seed=0, bf16=bf16,
            trainer_args={"generation_kwargs": {"min_new_tokens": length}}, **extra,
        )
        trainer = build_sdpo_trainer(config)
        if not sample:
            trainer._generate_single_turn = random_completions(trainer, length)
        if method == "sdpo-full":
            trainer._head_outside_forward = False
        generation_seconds: list[float] = []
        generate = trainer._generate_and_score_completions

        def timed_generate(inputs):
            start = time.perf_counter()
            output = generate(inputs)
            generation_seconds.append(time.perf_counter() - start)
            return output

        trainer._generate_and_score_completions = timed_generate
        step_seconds: list[float] = []

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                self.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                step_seconds.append(time.perf_counter() - self.start)

        trainer.add_callback(StepTimer())
        loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        lengths = [row["completions/mean_length"] for row in trainer.state.log_history if "completions/mean_length" in row]
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {
            "method": method, "peak_bytes": peak, "loaded_bytes": loaded,
            "train_seconds": step_seconds[-1] - generation_seconds[-1], "generation_seconds": generation_seconds[-1],
            "mean_length": lengths[-1] if lengths else None,
            "chunked": getattr(trainer, "_head_outside_forward", None) if trainer.distills else None,
        }


def measure(method: str, model_dir: Path, length: int, chunk: int, sample: bool, bf16: bool) -> dict:
    """A cell in a fresh process, so that each peak is its own."""
    command = [sys.executable, __file__, "--cell", method, str(model_dir), str(length), "--chunk", str(chunk)]
    command += (["--generate"] if sample else []) + (["--bf16"] if bf16 else [])
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vocabs = sorted({row["vocab"] for row in rows})
    figure, axes = plt.subplots(1, len(vocabs), figsize=(4.2 * len(vocabs), 3.6), sharey=True)
    for ax, vocab in zip(axes if len(vocabs) > 1 else [axes], vocabs):
        for method, style in zip(METHODS, ("o-", "s-", "x--")):
            points = sorted((r["length"], r["peak_bytes"] / 1e9) for r in rows if r["vocab"] == vocab and r["method"] == method)
            if points:
                ax.plot(*zip(*points), style, label=method)
        ax.set_xscale("log", base=2)
        ax.set_title(f"V = {vocab:,}")
        ax.set_xlabel("completion length (tokens)")
        ax.grid(alpha=0.3)
    (axes[0] if len(vocabs) > 1 else axes).set_ylabel("peak memory (GB)")
    (axes[0] if len(vocabs) > 1 else axes).legend()
    figure.suptitle(f"One optimizer step, {BATCH} completions of full length")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[598, 32768, 151936])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--chunk", type=int, default=1024, help="sdpo's distillation_chunk_size")
    parser.add_argument("--max_full_logits_gb", type=float, default=6.0, help="skip sdpo-full where one (B, T, V) tensor is larger")
    parser.add_argument("--generate", action="store_true", help="sample the completions from the model (slow)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the rows here too")
    parser.add_argument("--cell", nargs=3, metavar=("METHOD", "MODEL", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        method, model_dir, length = args.cell
        print(json.dumps(run_cell(method, model_dir, int(length), args.chunk, args.generate, args.bf16)))
        return

    rows = []
    print(f"{'V':>7} {'T':>5} {'method':>9} {'peak GB':>8} {'×grpo':>6} {'loaded':>7} {'train s':>8} {'×grpo':>6} {'gen s':>7}")
    with tempfile.TemporaryDirectory() as directory:
        for vocab in args.vocab:
            model_dir = build_model(vocab, Path(directory))
            for length in args.lengths:
                baseline = None
                for method in METHODS:
                    if method == "sdpo-full" and full_logits_bytes(vocab, length) > args.max_full_logits_gb * 1e9:
                        print(f"{vocab:>7} {length:>5} {method:>9}  skipped: one (B, T, V) float32 tensor is {gb(full_logits_bytes(vocab, length))} GB")
                        continue
                    row = {"vocab": vocab, "length": length, **measure(method, model_dir, length, args.chunk, args.generate, args.bf16)}
                    baseline = baseline or row
                    rows.append(row)
                    print(f"{vocab:>7} {length:>5} {method:>9} {gb(row['peak_bytes']):>8} {row['peak_bytes'] / baseline['peak_bytes']:>6.2f} "
                          f"{gb(row['loaded_bytes']):>7} {row['train_seconds']:>8.2f} {row['train_seconds'] / baseline['train_seconds']:>6.2f} "
                          f"{row['generation_seconds']:>7.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
