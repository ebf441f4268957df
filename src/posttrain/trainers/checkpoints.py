"""Checkpoints a killed run can always resume from.

transformers writes ``checkpoint-N/`` file by file, and posttrain's trainers add their own state
(a β schedule, an EMA teacher) after it. A process killed in the middle leaves a directory that
*looks* like a checkpoint but would resume with missing or stale state. So every checkpoint ends
with a marker file written last (atomically); resume picks the newest checkpoint that has it and
removes torn ones, and old checkpoints are rotated out only after the new one is complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from posttrain.artifacts import write_json
from posttrain.runtime import get_logger, process_rank

log = get_logger(__name__)

COMPLETE_FILE = "posttrain_checkpoint.json"
_CHECKPOINT_NAME = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    return int(match[1]) if match and path.is_dir() else None


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Every finished ``checkpoint-N`` under ``output_dir``, oldest first."""
    found = [p for p in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if checkpoint_step(p) is not None]
    return sorted((p for p in found if (p / COMPLETE_FILE).is_file()), key=checkpoint_step)


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest finished checkpoint, or None. Newer torn ones (the run was killed while saving
    them) are removed by the main process, so nothing later mistakes them for real ones."""
    if not Path(output_dir).is_dir():
        return None
    complete = complete_checkpoints(output_dir)
    newest = checkpoint_step(complete[-1]) if complete else -1
    for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = checkpoint_step(path)
        if step is not None and step > newest and not (path / COMPLETE_FILE).exists():
            log.warning(f"{path} is incomplete (the run stopped while saving it); resuming from an earlier one")
            if process_rank() == 0:
                shutil.rmtree(path, ignore_errors=True)
    return str(complete[-1]) if complete else None


class CompleteCheckpoints:
    """Trainer mixin (put it before the TRL trainer in the bases): checkpoints carry the trainer's
    own state and a completion marker, and rotation waits for the marker.

    Subclasses save and restore their extra state in :meth:`save_extra_state` /
    :meth:`restore_extra_state` instead of overriding ``_save_checkpoint``.
    """

    def save_extra_state(self, checkpoint: Path) -> None:
        """Write state transformers does not know about into ``checkpoint``. Called on every
        process, since sharded state is gathered from all of them; write where ``args.should_save``."""

    def restore_extra_state(self, checkpoint: Path) -> None:
        """Load what :meth:`save_extra_state` wrote (every process, before training resumes)."""

    def restore_checkpoint_state(self, checkpoint: Path) -> None:
        """Everything a resume needs beyond transformers' own files: TRL's count of trained tokens
        (logged as ``num_tokens``; TRL keeps it outside the checkpoint, so a resumed run would
        count from zero), then the subclass's :meth:`restore_extra_state`."""
        marker = json.loads((Path(checkpoint) / COMPLETE_FILE).read_text())
        if marker.get("total_train_tokens") is not None and hasattr(self, "_total_train_tokens"):
            self._total_train_tokens = marker["total_train_tokens"]
        self.restore_extra_state(Path(checkpoint))

    def _save_checkpoint(self, model, trial):
        # transformers rotates old checkpoints at the end of its save; postpone that until this one
        # is complete, or a kill in between could leave only a torn checkpoint behind.
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        run_dir = Path(self._get_output_dir(trial))
        checkpoint = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self.save_extra_state(checkpoint)
        if self.args.should_save:
            write_json(checkpoint / COMPLETE_FILE, {
                "step": self.state.global_step, "epoch": self.state.epoch,
                "total_train_tokens": getattr(self, "_total_train_tokens", None),
            })
            rotate_checkpoints(str(run_dir), limit, self.state.best_model_checkpoint)
