"""The pipeline report, from a hand-made run directory: tables, verdicts, plots, summary.json."""

import json

from posttrain.pipeline.report import write_report


def stage(root, name, command, start, end, **extra):
    out = root / name
    out.mkdir(parents=True)
    return {"name": name, "command": command, "status": "done", "output_dir": str(out),
            "started_at": f"2026-01-01T00:{start}", "finished_at": f"2026-01-01T00:{end}", "metrics": {}, **extra}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_run(tmp_path):
    root = tmp_path / "demo"
    stages = [
        stage(root, "sft", "sft", "00:00", "01:00"),
        stage(root, "eval_sft", "eval", "01:00", "01:05"),
        stage(root, "dpo", "dpo", "01:05", "02:35"),
        stage(root, "eval_dpo", "eval", "02:35", "02:40"),
        stage(root, "sdpo", "sdpo", "02:40", "03:00"),
        stage(root, "eval_sdpo", "eval", "03:00", "03:02"),
        stage(root, "pairs", "pairs", "03:02", "03:10"),
    ]
    stages.append({"name": "later", "command": "eval", "status": "pending", "output_dir": str(root / "later"), "metrics": {}})
    (root / "manifest.json").write_text(json.dumps({"pipeline": "demo", "stages": stages}))
    for name, model, acc in (("eval_sft", "sft", 0.5), ("eval_dpo", "dpo", 0.625), ("eval_sdpo", "sdpo", 0.25)):
        extra = {"pass@1": 0.1, "pass@4": 0.3, "format_compliance": 0.75} if name == "eval_sft" else {}
        (root / name / "eval.json").write_text(json.dumps({"model": str(root / model), "accuracy": acc, **extra}))
    write_rows(root / "sft" / "metrics.jsonl", [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3)])
    write_rows(root / "dpo" / "metrics.jsonl", [
        {"step": 1, "loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.5, "beta": 0.1},
        {"step": 2, "loss": 0.60, "rewards/margins": 0.3, "rewards/accuracies": 0.75, "beta": 0.09},
    ])
    write_rows(root / "sdpo" / "metrics.jsonl", [{"step": 1, "loss": 0.3, "reward": 0.1, "self_distillation/signal_fraction": 0.9}])
    (root / "pairs" / "summary.json").write_text(json.dumps({"rows_written": 105, "ties": 151}))
    return root


def test_report_tables_verdicts_and_plots(tmp_path):
    root = make_run(tmp_path)
    report = write_report(root, started_from={"dpo": "sft", "sdpo": "sft"}).read_text()

    assert "| sft | sft | done | 60 s |" in report and "| dpo | dpo | done | 90 s |" in report
    assert "| later | eval | pending | – |" in report and "Total: 190 s." in report
    assert "| model from stage | greedy | pass@1 | pass@4 | format compliance |\n|---|---|---|---|---|" in report
    assert "| sft | 50.0% | 10.0% | 30.0% | 75.0% |" in report and "| dpo | 62.5% | – | – | – |" in report
    # a method that does not help is said to not help
    assert "**dpo** improves on sft: +12.5 points." in report
    assert "**sdpo** does **not** improve on sft: -25.0 points." in report
    assert "- **pairs**: rows_written 105, ties 151" in report
    assert "- **dpo**: rewards/accuracies 0.75, rewards/margins 0.3, beta 0.09" in report

    for png in ("report_accuracy.png", "report_sft.png", "report_dpo.png", "report_sdpo.png"):
        assert (root / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in report
    assert not (root / "report_pairs.png").exists()  # no curves for a stage without training metrics

    summary = json.loads((root / "summary.json").read_text())
    assert summary["accuracy"]["dpo"] == {"accuracy": 0.625, "eval_stage": "eval_dpo"}
    assert [s["wall_s"] for s in summary["stages"]][:3] == [60.0, 5.0, 90.0]
    assert summary["verdicts"][1] == {"stage": "sdpo", "started_from": "sft", "change": -0.25, "improves": False}
    assert summary["total_wall_s"] == 190.0


def test_report_of_a_run_without_evaluations_or_metrics(tmp_path):
    root = tmp_path / "bare"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"pipeline": "bare", "stages": [
        {"name": "model", "command": "make-model", "status": "failed", "output_dir": str(root / "model"), "metrics": {}},
    ]}))
    report = write_report(root).read_text()
    assert "| model | make-model | failed | – |" in report and "Accuracy" not in report
    assert json.loads((root / "summary.json").read_text())["accuracy"] == {}


def test_accuracy_table_without_pass_at_k_has_as_many_cells_as_columns(tmp_path):
    root = tmp_path / "greedy"
    entries = [stage(root, "m", "sft", "00:00", "00:10"), stage(root, "eval_m", "eval", "00:10", "00:12")]
    (root / "manifest.json").write_text(json.dumps({"pipeline": "greedy", "stages": entries}))
    (root / "eval_m" / "eval.json").write_text(json.dumps({"model": str(root / "m"), "accuracy": 0.0, "format_compliance": 1.0}))
    lines = write_report(root).read_text().splitlines()
    table = lines[lines.index("| model from stage | greedy | format compliance |"):][:3]
    assert table == ["| model from stage | greedy | format compliance |", "|---|---|---|", "| m | 0.0% | 100.0% |"]


def test_report_shows_the_sdpo_premise_check(tmp_path):
    root = make_run(tmp_path)
    report = write_report(root).read_text()
    assert "SDPO premise check" not in report  # no eval measured it
    saved = json.loads((root / "eval_sft" / "eval.json").read_text())
    saved.update({"premise/plain": 0.5, "premise/demonstration": 0.75, "premise/feedback": 0.125,
                  "premise/first_errors": 8, "premise/first_error_feedback": 0.25, "premise/first_error_solution": None})
    (root / "eval_sft" / "eval.json").write_text(json.dumps(saved))
    report = write_report(root).read_text()
    assert "## SDPO premise check" in report
    assert "| sft | 50.0% | 75.0% | 12.5% | 8 | 25.0% | – |" in report
    assert "| dpo |" not in report.split("## SDPO premise check")[1]  # only models that were checked
    summary = json.loads((root / "summary.json").read_text())
    assert summary["accuracy"]["sft"]["premise/demonstration"] == 0.75


def test_judged_evaluations_are_tabled_with_their_win_rates(tmp_path):
    """An eval by a judge (mean score, or a win rate against another stage's model) gets its own table."""
    root = tmp_path / "judged"
    entries = [stage(root, "sft", "sft", "00:00", "00:10"), stage(root, "dpo", "dpo", "00:10", "00:20"),
               stage(root, "rm_score", "eval", "00:20", "00:21"), stage(root, "vs_sft", "eval", "00:21", "00:22")]
    (root / "manifest.json").write_text(json.dumps({"pipeline": "judged", "stages": entries}))
    (root / "rm_score" / "eval.json").write_text(json.dumps(
        {"model": str(root / "dpo"), "scorer": "reward_model", "num_examples": 8, "mean_score": 1.25}))
    (root / "vs_sft" / "eval.json").write_text(json.dumps(
        {"model": str(root / "dpo"), "scorer": "logprob_ab", "num_examples": 8, "baseline_model": str(root / "sft"),
         "win_rate": 0.6875, "wins": 5, "losses": 2, "ties": 1}))
    report = write_report(root).read_text()
    assert "| rm_score | dpo | reward_model | 1.25 | – | – | – |" in report
    assert "| vs_sft | dpo | logprob_ab | – | 68.8% | 5 / 2 / 1 | sft |" in report
    assert "Accuracy on held-out problems" not in report
    judged = json.loads((root / "summary.json").read_text())["judged"]
    assert judged["vs_sft"]["baseline"] == "sft" and judged["rm_score"]["mean_score"] == 1.25


def test_discover_stages_get_a_discovery_table_and_plot(tmp_path):
    """posttrain discover stages: discovery@k per method, in a table and a plot."""
    root = tmp_path / "discovery"
    entries = [stage(root, "best_of_k", "discover", "00:00", "00:01"), stage(root, "test_time_sdpo", "discover", "00:01", "00:02")]
    (root / "manifest.json").write_text(json.dumps({"pipeline": "discovery", "stages": entries}))
    for name, method, curve in (("best_of_k", "sampling", [0.0, 0.25]), ("test_time_sdpo", "sdpo", [0.125, 0.5])):
        (root / name / "discovery.json").write_text(json.dumps(
            {"method": method, "budget": 16, "num_problems": 8, "discovery": {"8": curve[0], "16": curve[1]}, "problems": []}))
    report = write_report(root).read_text()
    assert "| stage | method | problems | @8 | @16 |" in report
    assert "| best_of_k | sampling | 8 | 0.0% | 25.0% |" in report
    assert "| test_time_sdpo | sdpo | 8 | 12.5% | 50.0% |" in report
    assert (root / "report_discovery.png").stat().st_size > 0
    assert json.loads((root / "summary.json").read_text())["discovery"]["test_time_sdpo"]["discovery"]["16"] == 0.5
