"""The report of a pipeline run: ``report.md`` with PNG plots next to it, and ``summary.json``.

Written into the pipeline's directory (``runs/<name>/``) after every run, from what the stages
left behind: the manifest (status, wall time, metrics), each evaluation's ``eval.json``, each
training stage's ``metrics.jsonl`` and each pairs stage's ``summary.json``. Sections:

* stages: command, status, wall time;
* accuracy of every evaluated model (greedy, pass@k), with a bar chart, and for every trained
  model the change against the model it started from, said plainly when it is not an
  improvement;
* training curves per training stage (loss; β, margins and preference accuracy for DPO; reward,
  distillation loss and teacher-signal fraction for SDPO/GRPO), each with its curve on held-out
  data beside it where the stage evaluated during training (``eval_<metric>`` rows);
* preference-pair statistics of pairs stages and of DPO training.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from posttrain.artifacts import write_json, write_png, write_text
from posttrain.data.jsonl import iter_jsonl

# training curves worth a panel, per command, with a label that says what the axis is
CURVES = {
    "sft": [("loss", "training loss (nats/token)")],
    "dpo": [("loss", "DPO loss"), ("rewards/margins", "reward margin (chosen − rejected)"),
            ("rewards/accuracies", "preference accuracy"), ("beta", "β")],
    "sdpo": [("loss", "loss"), ("reward", "mean reward"), ("self_distillation/loss", "distillation loss"),
             ("self_distillation/signal_fraction", "samples with a teacher signal")],
    "grpo": [("loss", "GRPO loss"), ("reward", "mean reward"), ("reward_std", "reward std within groups")],
    "rm": [("loss", "Bradley–Terry loss"), ("accuracy", "preference accuracy"), ("margin", "reward margin (chosen − rejected)")],
}


def wall_seconds(entry: dict) -> float | None:
    """``finished_at − started_at`` of a manifest entry, in seconds (None when not both)."""
    try:
        start = datetime.fromisoformat(entry["started_at"])
        end = datetime.fromisoformat(entry["finished_at"])
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rows(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path, allow_torn_tail=True)] if path.is_file() else []


def curve_series(rows: list[dict], key: str) -> dict[str, list[tuple[float, float]]]:
    """The ``(step, value)`` points of ``key`` in a metrics.jsonl: ``train``, and ``held-out``
    from the ``eval_<key>`` rows of evaluations during training (when there are any)."""
    series = {}
    for name, column in (("train", key), ("held-out", f"eval_{key}")):
        points = [(r["step"], r[column]) for r in rows if isinstance(r.get(column), (int, float)) and "step" in r]
        if points:
            series[name] = points
    return series


def _curves_plot(stage: str, command: str, rows: list[dict], path: Path) -> bool:
    import matplotlib.pyplot as plt

    panels = [(key, label) for key, label in CURVES.get(command, []) if any(key in r for r in rows)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        series = curve_series(rows, key)
        for name, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], "-" if name == "train" else "--",
                    marker="." if len(points) < 40 else None, label=name)
        ax.set(xlabel="optimizer step", ylabel=label, title=f"{stage}: {key}")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    write_png(fig, path)
    return True


def _discovery_plot(discovery: dict[str, dict], path: Path) -> None:
    """discovery@k against k, one line per ``posttrain discover`` stage."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for stage, result in discovery.items():
        ks = [int(k) for k in result["discovery"]]
        ax.plot(ks, [100 * v for v in result["discovery"].values()], marker="o", label=f"{stage} ({result['method']})")
    ax.set(xlabel="attempts per problem (k)", ylabel="% of problems solved within k", ylim=(0, 105))
    ax.set_title("discovery@k on problems the start model almost never solves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _accuracy_plot(accuracy: dict[str, dict], path: Path) -> None:
    """Greedy accuracy per model, and format compliance beside it where it was measured."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(accuracy)
    series = [("accuracy", "greedy accuracy", "tab:blue")]
    if any("format_compliance" in accuracy[n] for n in names):
        series.append(("format_compliance", "format compliance", "tab:orange"))
    width = 0.8 / len(series)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) * len(series) + 1.5), 3.4))
    for i, (key, label, color) in enumerate(series):
        values = [100 * accuracy[n].get(key, float("nan")) for n in names]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, color=color, label=label)
        for bar, value in zip(bars, values):
            if value == value:  # not NaN
                ax.annotate(f"{value:.1f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names)
    ax.set(ylabel="% of held-out problems", xlabel="model (the stage that produced it)", ylim=(0, 110),
           title="accuracy per stage" if len(series) == 1 else "accuracy and format compliance per stage")
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(loc="upper left", fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    write_png(fig, path)


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "–"


def write_report(root: str | Path, started_from: dict[str, str] | None = None) -> Path:
    """Write ``report.md``, its PNGs and ``summary.json`` into ``root``; return the report's path.

    ``started_from`` maps a training stage to the stage whose model it started from (the runner
    knows it from the configs); it is what "improves on" compares against.
    """
    import matplotlib

    matplotlib.use("Agg")
    root = Path(root)
    manifest = _read_json(root / "manifest.json") or {"stages": []}
    entries = manifest["stages"]
    by_dir = {str(Path(e["output_dir"])): e["name"] for e in entries}

    # accuracy of every evaluated model, keyed by the stage that produced the model
    accuracy: dict[str, dict] = {}
    judged: dict[str, dict] = {}  # evaluations by a judge: a mean score, or a win rate against a baseline
    for entry in entries:
        if entry["command"] != "eval" or entry["status"] != "done":
            continue
        result = _read_json(Path(entry["output_dir"]) / "eval.json")
        if result is None:
            continue
        model_stage = by_dir.get(str(Path(result["model"])), result["model"])
        if "accuracy" not in result:  # a judge's mean score or a win rate is no accuracy
            if "win_rate" in result or "mean_score" in result:
                baseline = result.get("baseline_model")
                judged[entry["name"]] = {
                    "model": model_stage, "scorer": result.get("scorer"),
                    "baseline": by_dir.get(str(Path(baseline)), baseline) if baseline else None,
                    **{k: result[k] for k in ("mean_score", "win_rate", "wins", "losses", "ties", "num_examples") if k in result},
                }
            continue
        accuracy[model_stage] = {
            k: v for k, v in result.items() if k in ("accuracy", "format_compliance") or k.startswith(("pass@", "premise/"))
        }
        accuracy[model_stage]["eval_stage"] = entry["name"]

    stages, plots = [], {}
    for entry in entries:
        rows = _rows(Path(entry["output_dir"]) / "metrics.jsonl")
        if rows and _curves_plot(entry["name"], entry["command"], rows, root / f"report_{entry['name']}.png"):
            plots[entry["name"]] = f"report_{entry['name']}.png"
        stages.append({
            "name": entry["name"], "command": entry["command"], "status": entry["status"],
            "wall_s": wall_seconds(entry), "metrics": entry.get("metrics", {}),
        })
    if accuracy:
        _accuracy_plot(accuracy, root / "report_accuracy.png")
    discovery = {}  # posttrain discover stages: discovery@k per method
    for entry in entries:
        if entry["command"] == "discover" and (result := _read_json(Path(entry["output_dir"]) / "discovery.json")):
            discovery[entry["name"]] = {k: result[k] for k in ("method", "budget", "num_problems", "discovery")}
    if discovery:
        _discovery_plot(discovery, root / "report_discovery.png")

    verdicts = []
    for stage, base in (started_from or {}).items():
        if stage in accuracy and base in accuracy:
            delta = accuracy[stage]["accuracy"] - accuracy[base]["accuracy"]
            verdicts.append({"stage": stage, "started_from": base, "change": delta, "improves": delta > 0})

    pairs = {}
    for entry in entries:
        if entry["command"] == "pairs":
            pairs[entry["name"]] = _read_json(Path(entry["output_dir"]) / "summary.json") or {}
        elif entry["command"] == "dpo":
            rows = _rows(Path(entry["output_dir"]) / "metrics.jsonl")
            last = [r for r in rows if "rewards/accuracies" in r]
            if last:
                pairs[entry["name"]] = {k: last[-1][k] for k in ("rewards/accuracies", "rewards/margins", "beta") if k in last[-1]}
            held_out = [r for r in rows if "eval_rewards/accuracies" in r]  # the last evaluation on held-out pairs
            if held_out:
                pairs.setdefault(entry["name"], {}).update(
                    {k: held_out[-1][k] for k in ("eval_rewards/accuracies", "eval_rewards/margins") if k in held_out[-1]}
                )

    summary = {"pipeline": manifest.get("pipeline"), "stages": stages, "accuracy": accuracy, "verdicts": verdicts,
               "judged": judged, "discovery": discovery, "preference_pairs": pairs, "total_wall_s": sum(s["wall_s"] or 0 for s in stages)}
    write_json(root / "summary.json", summary)
    write_text(root / "report.md", _markdown(summary, plots, bool(accuracy)))
    return root / "report.md"


def _premise_lines(accuracy: dict[str, dict]) -> list[str]:
    """The SDPO premise check of the models evaluated with ``premise_check``: a self-teacher
    helps only if the model solves more problems with a solution or feedback in context, and, on
    its own failed samples, puts more probability on the correct token at the first error."""
    checked = {stage: a for stage, a in accuracy.items() if "premise/plain" in a}
    if not checked:
        return []
    lines = ["## SDPO premise check", "", "Greedy accuracy with the plain prompt and with SDPO's teacher contexts "
             "(a correct solution / feedback on a wrong attempt in the prompt); then, on the model's own failed "
             "greedy completions, the share where the teacher puts more probability than the student on the "
             "correct token at the first error (with the verifier's feedback on that completion / with a solution). "
             "SDPO's teacher can only teach what it does better than the student.", "",
             "| model from stage | plain | solution in context | feedback in context | first errors | teacher wins: feedback | teacher wins: solution |",
             "|---|---|---|---|---|---|---|"]
    for stage, a in checked.items():
        cells = [_percent(a.get(f"premise/{k}")) for k in ("plain", "demonstration", "feedback")]
        cells.append(str(a["premise/first_errors"]) if "premise/first_errors" in a else "–")
        cells += [_percent(a.get(f"premise/first_error_{k}")) for k in ("feedback", "solution")]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _markdown(summary: dict, plots: dict[str, str], has_accuracy: bool) -> str:
    lines = [f"# Report: {summary['pipeline']}", ""]
    lines += ["## Stages", "", "| stage | command | status | wall time |", "|---|---|---|---|"]
    for s in summary["stages"]:
        wall = f"{s['wall_s']:.0f} s" if s["wall_s"] is not None else "–"
        lines.append(f"| {s['name']} | {s['command']} | {s['status']} | {wall} |")
    lines += ["", f"Total: {summary['total_wall_s']:.0f} s.", ""]

    if has_accuracy:
        ks = sorted({k for a in summary["accuracy"].values() for k in a if k.startswith("pass@")})
        columns = ["accuracy", *ks, "format_compliance"]
        header = ["model from stage", "greedy", *ks, "format compliance"]
        lines += ["## Accuracy on held-out problems", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for stage, a in summary["accuracy"].items():
            lines.append(f"| {stage} | " + " | ".join(_percent(a.get(k)) for k in columns) + " |")
        lines += ["", "Format compliance: the share of greedy answers that end as the format says (END for a base "
                  "model, the end-of-turn token for a chat model) within the token budget."]
        lines += ["", "![accuracy per stage](report_accuracy.png)", ""]
        for v in summary["verdicts"]:
            word = "improves on" if v["improves"] else "does **not** improve on"
            lines.append(f"- **{v['stage']}** {word} {v['started_from']}: {100 * v['change']:+.1f} points.")
        lines.append("")
        lines += _premise_lines(summary["accuracy"])

    if summary["judged"]:
        lines += ["## Judged evaluations", "", "| eval stage | model from stage | scorer | mean score | win rate | wins / losses / ties | "
                  "against |", "|---|---|---|---|---|---|---|"]
        for stage, j in summary["judged"].items():
            score = f"{j['mean_score']:.3g}" if "mean_score" in j else "–"
            record = f"{j['wins']} / {j['losses']} / {j['ties']}" if "wins" in j else "–"
            lines.append(f"| {stage} | {j['model']} | {j['scorer']} | {score} | {_percent(j.get('win_rate'))} | {record} | "
                         f"{j['baseline'] or '–'} |")
        lines += ["", "Win rate: the share of prompts the judge prefers the model's answer, asked in both orders; a tie "
                  "counts half.", ""]

    if summary["discovery"]:
        ks = sorted({int(k) for d in summary["discovery"].values() for k in d["discovery"]})
        lines += ["## Discovery on hard problems", "", "The share of problems solved within k attempts (discovery@k), on "
                  "problems the start model almost never solves: best-of-k samples the unchanged model, test-time SDPO "
                  "learns from the verifier's feedback between groups of attempts.", "",
                  "| stage | method | problems | " + " | ".join(f"@{k}" for k in ks) + " |", "|---|---|---|" + "---|" * len(ks)]
        for stage, d in summary["discovery"].items():
            cells = [_percent(d["discovery"].get(str(k))) for k in ks]
            lines.append(f"| {stage} | {d['method']} | {d['num_problems']} | " + " | ".join(cells) + " |")
        lines += ["", "![discovery@k](report_discovery.png)", ""]

    if plots:
        lines += ["## Training curves", ""]
        for stage, png in plots.items():
            lines += [f"### {stage}", "", f"![{stage} training curves]({png})", ""]

    if summary["preference_pairs"]:
        lines += ["## Preference pairs", ""]
        for stage, stats in summary["preference_pairs"].items():
            cells = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()
                              if isinstance(v, (int, float, str)))
            lines.append(f"- **{stage}**: {cells}")
        lines.append("")
    lines.append("Numbers: `summary.json`; every stage's outputs and logs are in its directory.")
    return "\n".join(lines) + "\n"
