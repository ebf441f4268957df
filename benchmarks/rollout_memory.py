"""Memory of ``posttrain rollout`` and ``posttrain pairs`` over many prompts: flat, or growing?

    python benchmarks/rollout_memory.py [--prompts 10000] [--batch-size 500] [--max-new-tokens 2] [--out DIR]

Builds the tiny model, writes ``--prompts`` short addition prompts ("3+4=") as JSONL, then runs
``posttrain rollout`` (2 samples per prompt, so the verifier can pair them) and ``posttrain pairs``
(verifier judge) as subprocesses, reading their resident memory (VmRSS in /proc/<pid>/status)
every 50 ms next to how far the output file has grown. Prints the floor (lowest RSS) and peak RSS
of the rollout process in each tenth of its output, then the pairs process's peak RSS on the full rollouts file next to its peak on the first 100
rows: a reader that streams has the same peak for both, one that loads the file does not (that
second run is the accumulating baseline: the same command on a file ``--prompts``/100 times
smaller). The settings are those of tests/robustness/test_load.py; ``--out`` keeps the files.

Torch runs on one thread (``OMP_NUM_THREADS=1``): on a shared 2-core machine two threads per
process oversubscribe the cores. The rollout runs with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then
returns every freed block of 64 KiB or more to the OS at once, so RSS follows what the process
holds (by default it keeps freed batch buffers as slack, in which a leak grows unseen).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from posttrain.commands.make_model import MakeModelConfig, make_model


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_sampled(command: list[str], output: Path, env: dict) -> tuple[list[tuple[int, float]], float]:
    """Run ``command``; return (bytes of ``output`` so far, RSS MiB) every 50 ms, and the wall time."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    samples = []
    while process.poll() is None:
        rss = rss_mib(process.pid)
        if rss is not None:
            samples.append((output.stat().st_size if output.exists() else 0, rss))
        time.sleep(0.05)
    stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        sys.exit(f"{command[3]} failed ({process.returncode}):\n{stderr[-3000:]}")
    return samples, time.monotonic() - start


def by_tenths(samples: list[tuple[int, float]]) -> list[tuple[int, float, float]]:
    """(tenth, floor, peak) of RSS while the output was in each tenth of its final size, from the
    first batch written to the last (the exit after it excluded; tenths with no sample skipped)."""
    final = max(size for size, _ in samples) or 1
    tenths: dict[int, list[float]] = {}
    for size, rss in samples:
        if 0 < size < final:
            tenths.setdefault(min(9, size * 10 // final), []).append(rss)
    return [(tenth, min(values), max(values)) for tenth, values in sorted(tenths.items())]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=2)
    parser.add_argument("--out", default=None, help="keep the model, prompts and outputs here (default: a temporary directory)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cli = [sys.executable, "-m", "posttrain.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        make_model(MakeModelConfig(out=str(root / "model"), seed=0))
        prompts = root / "prompts.jsonl"
        rng = random.Random(0)
        with open(prompts, "w") as handle:
            for _ in range(args.prompts):
                a, b = rng.randint(1, 9), rng.randint(1, 9)
                handle.write(json.dumps({"prompt": f"{a}+{b}=", "a": a, "b": b}) + "\n")
        rollouts = root / "rollout" / "rollouts.jsonl"
        samples, seconds = run_sampled(cli + [
            "rollout", "--model_name_or_path", str(root / "model"), "--output_dir", str(rollouts.parent),
            "--dataset_name", str(prompts), "--dataset_split", "train", "--num_samples", "2",
            "--max_new_tokens", str(args.max_new_tokens), "--batch_size", str(args.batch_size)], rollouts,
            {**env, "MALLOC_MMAP_THRESHOLD_": "65536"})
        (root / "rollout_rss.json").write_text(json.dumps(samples))  # [bytes written, RSS MiB] every 50 ms
        rows = sum(1 for _ in open(rollouts, "rb"))
        print(f"rollout: {rows:,} rows, {rollouts.stat().st_size / 2**20:.1f} MiB of JSONL, {seconds:.0f} s")
        print("  output    floor    peak (RSS, MiB)")
        for tenth, floor, peak in by_tenths(samples):
            print(f"  {tenth * 10:3d}-{tenth * 10 + 10}%  {floor:7.1f} {peak:7.1f}")

        small = root / "small.jsonl"
        with open(rollouts, "rb") as source, open(small, "wb") as target:
            target.writelines(line for _, line in zip(range(max(1, args.prompts // 100)), source))
        peaks = {}
        for name, path in (("full", rollouts), ("first 1%", small)):
            out = root / f"pairs-{name[:4]}"
            samples, seconds = run_sampled(cli + ["pairs", "--rollouts", str(path), "--output_dir", str(out)],
                                           out / "pairs.jsonl", env)
            peaks[name] = max(rss for _, rss in samples)
            summary = json.loads((out / "summary.json").read_text())
            print(f"pairs on {name}: {summary['prompts']:,} prompts, {summary.get('prompts_paired', 0):,} paired, "
                  f"{summary.get('ties', 0):,} ties; peak RSS {peaks[name]:.1f} MiB, {seconds:.1f} s")
        print(f"pairs peak RSS, full / first 1%: {peaks['full'] / peaks['first 1%']:.3f}")


if __name__ == "__main__":
    main()
