"""The shipped recipes: every one validates, and the quickstart really learns."""

import json
from pathlib import Path

import pytest

from posttrain.pipeline.runner import plan, run_pipeline

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(recipe, tmp_path):
    _, _, stages = plan(recipe, output_root=str(tmp_path))
    assert stages


@pytest.mark.slow
def test_quickstart_learns_well_above_chance(tmp_path):
    manifest = run_pipeline(Path(__file__).parents[1] / "recipes" / "quickstart.yaml", output_root=str(tmp_path))
    stages = {s["name"]: s for s in manifest["stages"]}
    assert all(s["status"] == "done" for s in stages.values())
    accuracy = stages["eval_sft"]["metrics"]["accuracy"]
    # an untrained model scores 0; the recipe's short SFT budget lands around 55%
    assert 0.3 < accuracy < 0.95, accuracy
    saved = json.loads((tmp_path / "quickstart" / "eval_sft" / "eval.json").read_text())
    assert saved["accuracy"] == accuracy and saved["num_examples"] == 300
