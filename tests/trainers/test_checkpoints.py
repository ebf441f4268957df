"""Complete checkpoints: the marker, resume from the newest complete one, rotation after it."""

import json
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.trainers.checkpoints import COMPLETE_FILE, complete_checkpoints, last_complete_checkpoint


def make_checkpoint(root: Path, step: int, complete: bool) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / COMPLETE_FILE).write_text(json.dumps({"step": step}))
    return path


def test_newest_complete_checkpoint_wins_and_torn_newer_ones_are_removed(tmp_path):
    make_checkpoint(tmp_path, 2, True)
    make_checkpoint(tmp_path, 10, True)  # numeric order, not text order
    make_checkpoint(tmp_path, 12, False)
    (tmp_path / "checkpoint-x").mkdir()  # not a checkpoint name
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert not (tmp_path / "checkpoint-12").exists()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]


def test_a_torn_checkpoint_older_than_a_complete_one_is_left_alone(tmp_path):
    make_checkpoint(tmp_path, 2, False)
    make_checkpoint(tmp_path, 4, True)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert (tmp_path / "checkpoint-2").exists()


@pytest.mark.parametrize("layout", ["missing", "empty", "only_torn"])
def test_nothing_to_resume_from(tmp_path, layout):
    root = tmp_path / "out"
    if layout != "missing":
        root.mkdir()
    if layout == "only_torn":
        make_checkpoint(root, 3, False)
    assert last_complete_checkpoint(root) is None
    assert not (root / "checkpoint-3").exists()


@pytest.mark.slow
def test_every_saved_checkpoint_is_complete_and_rotation_keeps_the_newest(tiny_model_dir, tmp_path):
    from posttrain.commands.sft import SFTJobConfig, build_sft_trainer
    from posttrain.trainers.loop import train_and_save

    config = load_config(SFTJobConfig, values={
        "model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path), "dataset_train_split": "train[:16]",
        "per_device_train_batch_size": 4, "max_steps": 4, "save_strategy": "steps", "save_steps": 1,
        "save_total_limit": 2, "seed": 0})
    train_and_save(build_sft_trainer(config), config.output_dir, resume=False)
    kept = complete_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["checkpoint-3", "checkpoint-4"]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    marker = json.loads((kept[-1] / COMPLETE_FILE).read_text())
    assert marker["step"] == 4 and (kept[-1] / "trainer_state.json").exists()
