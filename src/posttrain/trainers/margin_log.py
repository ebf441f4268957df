"""The margin log of a DPO run: ``<output_dir>/margins/``.

``margins.jsonl`` gets one row per β-schedule update (one per training batch):
``{step, update, beta, loss, n, kept, margin: {mean, std, min, q05, q25, q50, q75, q95, max}, schedule}``,
and ``update-NNNNNN.npy`` holds that batch's raw margins (float32, all processes gathered).
Only the main process writes. On resume, rows and files past the checkpoint are dropped, so the
log never holds a batch twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from posttrain.data.jsonl import append_jsonl, iter_jsonl, write_jsonl

QUANTILES = {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}


def margin_summary(margins: torch.Tensor) -> dict:
    margins = margins.detach().float().cpu()
    summary = {
        "mean": margins.mean().item(),
        "std": margins.std().item() if margins.numel() > 1 else 0.0,
        "min": margins.min().item(),
        "max": margins.max().item(),
    }
    values = torch.quantile(margins, torch.tensor(list(QUANTILES.values())))
    summary.update({name: v.item() for name, v in zip(QUANTILES, values)})
    return summary


class MarginLog:
    def __init__(self, output_dir: str | Path):
        self.dir = Path(output_dir) / "margins"
        self.path = self.dir / "margins.jsonl"

    def write(self, *, step: int, update: int, beta: float, loss: float, margins: torch.Tensor, kept: int, schedule: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        np.save(self.dir / f"update-{update:06d}.npy", margins.detach().float().cpu().numpy())
        row = {
            "step": step,
            "update": update,
            "beta": beta,
            "loss": loss,
            "n": int(margins.numel()),
            "kept": kept,
            "margin": margin_summary(margins),
            "schedule": schedule,
        }
        append_jsonl(self.path, [row])

    def truncate(self, last_update: int) -> None:
        """Forget everything logged after ``last_update`` (the state a checkpoint restores)."""
        if self.path.exists():
            rows = [row for _, row in iter_jsonl(self.path, allow_torn_tail=True) if row["update"] <= last_update]
            write_jsonl(self.path, rows)
        for npy in self.dir.glob("update-*.npy"):
            if int(npy.stem.split("-")[1]) > last_update:
                npy.unlink()
