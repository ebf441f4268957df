"""posttrain's ECRTM against TopMost's, same bag of words and settings: epoch time, TD and C_V.

    pip download --no-deps topmost -d /tmp/w && python -m zipfile -e /tmp/w/topmost-*.whl /tmp/topmost
    python benchmarks/ecrtm_vs_topmost.py --topmost-src /tmp/topmost [--epochs 50] [--vocab-size 3000]

TopMost's ECRTM module is loaded straight from its source (its package pulls torchvision and
other heavy dependencies this benchmark does not need). Both models train in this one process
on BBC News with K=50, batch 200, Adam lr 0.002, the same seed and the same batch order, one
epoch of each in turn (so both see the same machine load); TD (top-25) and C_V (top-10, the
training texts as reference) come from the same posttrain metrics code.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from posttrain.topics.corpus import load_topic_corpus
from posttrain.topics.ecrtm import ECRTM
from posttrain.topics.metrics import top_words, topic_metrics


def load_topmost_ecrtm(src: str):
    """TopMost's ECRTM class from ``<src>/topmost/models/basic/ECRTM`` without importing topmost."""
    folder = Path(src) / "topmost" / "models" / "basic" / "ECRTM"
    spec = importlib.util.spec_from_file_location("topmost_ecrtm", folder / "__init__.py", submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["topmost_ecrtm"] = package
    module_spec = importlib.util.spec_from_file_location("topmost_ecrtm.ECRTM", folder / "ECRTM.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["topmost_ecrtm.ECRTM"] = module
    module_spec.loader.exec_module(module)
    return module.ECRTM


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topmost-src", required=True, help="a directory holding TopMost's source (topmost/...)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--vocab-size", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    corpus = load_topic_corpus("bbc", vocab_size=args.vocab_size, seed=args.seed)
    bow = torch.from_numpy(corpus.train.bow.toarray())
    vocab_size = len(corpus.vocab)
    TopMostECRTM = load_topmost_ecrtm(args.topmost_src)
    torch.manual_seed(args.seed)
    models = {"TopMost ECRTM": TopMostECRTM(vocab_size, num_topics=50), "posttrain ECRTM": ECRTM(vocab_size, num_topics=50)}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=0.002) for name, m in models.items()}
    times = {name: [] for name in models}
    for epoch in range(args.epochs):
        order = torch.randperm(bow.shape[0])
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            for i in range(0, bow.shape[0], 200):
                loss = model(bow[order[i : i + 200]])["loss"]
                optimizers[name].zero_grad()
                loss.backward()
                optimizers[name].step()
            times[name].append(time.perf_counter() - start)
        print(f"epoch {epoch + 1}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)

    baseline = statistics.mean(times["TopMost ECRTM"][1:])
    print(f"\nBBC News, {bow.shape[0]} documents, V={vocab_size}, K=50, {args.epochs} epochs (first epoch not timed)")
    print(f"{'model':18s} {'s/epoch':>8s} {'vs TopMost':>11s} {'TD':>7s} {'C_V':>7s}")
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            beta = model.get_beta().numpy()
        metrics = topic_metrics(top_words(beta, corpus.vocab, 10), top_words(beta, corpus.vocab, 25), corpus.train.texts)
        seconds = statistics.mean(times[name][1:])
        print(f"{name:18s} {seconds:8.3f} {seconds / baseline:10.2f}x {metrics['td']:7.3f} {metrics['c_v']:7.3f}")


if __name__ == "__main__":
    main()
