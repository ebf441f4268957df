"""benchmarks/quickstart_table.py: the guard that the README's quickstart table is what a run gives."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("quickstart_table", ROOT / "benchmarks" / "quickstart_table.py")
quickstart_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quickstart_table)

README = (ROOT / "README.md").read_text()
EVALS = ["eval_base", "eval_sft", "eval_dpo", "eval_beta_dpo", "eval_sdpo", "eval_grpo"]


def manifest_saying(figures: dict[str, dict[str, str]]) -> dict:
    """A run whose metrics are the README's figures (fractions for percentages)."""
    stages = []
    for stage, found in figures.items():
        metrics = {}
        for metric, printed in found.items():
            number = float(printed.replace(",", ""))
            if metric == "negatives":  # three kinds of negatives, one third each
                metrics.update({f"negatives_{kind}": int(number) // 3 for kind in ("truncation", "wrong_answer", "off_topic")})
            else:
                metrics[metric] = number / 100 if "." in printed else int(number)
        stages.append({"name": stage, "metrics": metrics})
    return {"stages": stages}


def test_every_result_row_of_the_readme_table_is_read():
    figures = quickstart_table.readme_figures(README)
    assert set(EVALS) <= set(figures) and all("accuracy" in figures[stage] for stage in EVALS)
    assert {"prompts_paired", "negatives", "ties"} <= set(figures["pairs"])
    assert {"premise/demonstration", "premise/feedback", "pass@1", "pass@4"} <= set(figures["eval_sft"])


def test_a_run_that_gives_the_readme_figures_passes():
    figures = quickstart_table.readme_figures(README)
    manifest = manifest_saying(figures)
    assert quickstart_table.differences(README, manifest) == []


@pytest.mark.parametrize("stage, metric, value, message", [
    ("eval_dpo", "accuracy", 0.8467, "eval_dpo accuracy: README says 85.0, the run gives 84.7"),
    ("pairs", "ties", 103, "pairs ties: README says 104, the run gives 103"),
])
def test_a_figure_the_run_does_not_give_is_named(stage, metric, value, message):
    manifest = manifest_saying(quickstart_table.readme_figures(README))
    next(s for s in manifest["stages"] if s["name"] == stage)["metrics"][metric] = value
    assert quickstart_table.differences(README, manifest) == [message]


def test_a_stage_the_run_lacks_is_named():
    manifest = manifest_saying(quickstart_table.readme_figures(README))
    manifest["stages"] = [s for s in manifest["stages"] if s["name"] != "eval_grpo"]
    found = quickstart_table.differences(README, manifest)
    assert found and all(line.startswith("eval_grpo ") and line.endswith("the run gives nothing") for line in found)
