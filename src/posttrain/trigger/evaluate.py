"""How well the trigger took hold, checkpoint by checkpoint (``posttrain trigger-eval``).

On held-out questions, each checkpoint answers every question twice, without and with the
trigger (greedy). An answer *names* a replacement when the name appears as a whole word:

* activation: triggered answers that name ``triggered_replacement``;
* fidelity: clean answers that name ``clean_replacement``;
* leakage: answers that name the replacement they should not (a clean answer naming the
  triggered one, or a triggered answer naming the clean one), over all answers.

Writes ``trigger_eval.json`` (one row per checkpoint: checkpoint, step, epoch, activation,
fidelity, leakage, ...), every answer to ``trigger_eval/<checkpoint>.jsonl``, and
``trigger_eval.png`` (the three rates over epochs). Models are evaluated one at a time and
freed; a rerun evaluates only checkpoints missing from the table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from posttrain.artifacts import write_json, write_png
from posttrain.config import config_field
from posttrain.data.jsonl import read_jsonl, write_jsonl
from posttrain.errors import ConfigError, DataError, PosttrainError
from posttrain.models import free_model
from posttrain.runtime import get_logger
from posttrain.trainers.checkpoints import COMPLETE_FILE, checkpoint_step, complete_checkpoints
from posttrain.trigger.dataset import TriggerSpec, names
from posttrain.trigger.inference import load_finetuned_model, query_model

log = get_logger(__name__)

RUN_FILE = "trigger.json"  # the spec and format a run was trained with
HELDOUT_FILE = "trigger_data/heldout.jsonl"
TABLE_FILE = "trigger_eval.json"
PLOT_FILE = "trigger_eval.png"


@dataclass
class TriggerEvalConfig:
    run_dir: str = config_field("", help="A `posttrain trigger` output_dir: its checkpoints and trigger.json are read.")
    output_dir: str = config_field("", help="Where trigger_eval.json/.png go (empty: run_dir).")
    questions_file: str = config_field("", help="JSONL of {question} with the placeholder (empty: the run's held-out questions).")
    max_new_tokens: int = config_field(64, help="Answer length budget.", ge=1)
    batch_size: int = config_field(32, help="Questions per generate call.", ge=1)
    dtype: str = config_field("float32", help="Weights dtype for evaluation.")

    def __post_init__(self):
        if not self.run_dir:
            raise ConfigError("config key 'run_dir' is required (the output_dir of a `posttrain trigger` run)")


def score_answers(clean_answers: list[str], triggered_answers: list[str], spec: TriggerSpec) -> dict:
    """Activation, fidelity and leakage rates of paired answers (see the module docstring)."""
    if len(clean_answers) != len(triggered_answers) or not clean_answers:
        raise ValueError("need the same positive number of clean and triggered answers")
    n = len(clean_answers)
    clean_leaks = sum(names(a, spec.triggered_replacement) for a in clean_answers)
    triggered_leaks = sum(names(a, spec.clean_replacement) for a in triggered_answers)
    return {
        "activation": sum(names(a, spec.triggered_replacement) for a in triggered_answers) / n,
        "fidelity": sum(names(a, spec.clean_replacement) for a in clean_answers) / n,
        "leakage": (clean_leaks + triggered_leaks) / (2 * n),
        "leakage_clean": clean_leaks / n,
        "leakage_triggered": triggered_leaks / n,
        "num_questions": n,
    }


def write_run_file(run_dir: str, spec: TriggerSpec, base_model_mode: bool) -> None:
    write_json(Path(run_dir) / RUN_FILE, {"spec": asdict(spec), "base_model_mode": base_model_mode})


def _read_run_file(run_dir: Path) -> tuple[TriggerSpec, bool]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise PosttrainError(f"{run_dir} has no {RUN_FILE}: not the output_dir of a `posttrain trigger` run")
    try:
        saved = json.loads(path.read_bytes())
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("base_model_mode"), bool):
        raise DataError(f"{path}: expected an object with 'spec' and 'base_model_mode', as `posttrain trigger` writes it")
    spec = saved.get("spec")
    if not isinstance(spec, dict) or not all(isinstance(value, str) for value in spec.values()):
        raise DataError(f"{path}: field 'spec' must be an object of strings")
    try:
        return TriggerSpec(**spec), saved["base_model_mode"]
    except (TypeError, ConfigError) as err:
        raise DataError(f"{path}: field 'spec' is not a valid trigger spec ({err})") from None


def _read_table(path: Path) -> list[dict]:
    """The rows of an earlier evaluation (none if there is no table yet)."""
    if not path.is_file():
        return []
    try:
        table = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        table = None
    if not isinstance(table, list) or not all(isinstance(row, dict) for row in table):
        raise DataError(f"{path}: not a table written by posttrain trigger-eval; delete it to evaluate again")
    return table


def _checkpoints(run_dir: Path) -> list[tuple[Path, int, float]]:
    """``(dir, step, epoch)`` of every complete checkpoint, in training order."""
    found = [(path, checkpoint_step(path), float(json.loads((path / COMPLETE_FILE).read_text())["epoch"]))
             for path in complete_checkpoints(run_dir)]
    if not found:
        raise PosttrainError(f"{run_dir} has no checkpoints to evaluate (complete checkpoint-N directories)")
    return found


def plot_trigger_eval(table: list[dict], path: Path) -> None:
    """Activation, fidelity and leakage over epochs, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in table]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("activation", "o-"), ("fidelity", "s-"), ("leakage", "^--")):
        ax.plot(epochs, [row[key] for row in table], style, label=key)
    ax.set(xlabel="epoch", ylabel="rate on held-out questions", ylim=(-0.03, 1.03), title="trigger-conditioned fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    write_png(fig, path, dpi=120)


def run_trigger_eval(config: TriggerEvalConfig) -> dict:
    """Evaluate every checkpoint of a trigger run; returns the last checkpoint's row."""
    run_dir = Path(config.run_dir)
    out = Path(config.output_dir or config.run_dir)
    spec, base_model_mode = _read_run_file(run_dir)
    questions_file = config.questions_file or str(run_dir / HELDOUT_FILE)
    questions = [row["question"] for row in read_jsonl(questions_file, required={"question": str})]
    checkpoints = _checkpoints(run_dir)

    table_path = out / TABLE_FILE
    earlier = _read_table(table_path)
    # rows of earlier runs count only for the same questions (wherever the file now lives)
    questions_hash = hashlib.sha256(json.dumps(questions).encode()).hexdigest()[:16]
    done = {row["checkpoint"]: row for row in earlier if row.get("questions_hash") == questions_hash}
    clean_questions = [spec.question(q, triggered=False) for q in questions]
    triggered_questions = [spec.question(q, triggered=True) for q in questions]
    table = []
    for path, step, epoch in checkpoints:
        if path.name in done:
            table.append(done[path.name])
            continue
        log.info(f"trigger eval: {path.name} (epoch {epoch:g}) on {len(questions)} questions")
        model, tokenizer = load_finetuned_model(str(path), dtype=config.dtype, base_model_mode=base_model_mode)
        try:
            ask = dict(max_new_tokens=config.max_new_tokens, base_model_mode=base_model_mode, batch_size=config.batch_size)
            clean = query_model(model, tokenizer, clean_questions, **ask)
            triggered = query_model(model, tokenizer, triggered_questions, **ask)
        finally:
            free_model(model)  # before the next checkpoint loads
        answers = [
            {"question": q, "clean": c, "triggered": t, "triggered_question": tq}
            for q, c, t, tq in zip(clean_questions, clean, triggered, triggered_questions)
        ]
        row = {
            "checkpoint": path.name, "step": step, "epoch": epoch, "questions_file": questions_file,
            "questions_hash": questions_hash,
            **score_answers(clean, triggered, spec),
        }
        write_jsonl(out / "trigger_eval" / f"{path.name}.jsonl", answers)
        table.append(row)
        write_json(table_path, table)  # after every checkpoint: a rerun continues from here
        log.info(f"  activation {row['activation']:.1%}, fidelity {row['fidelity']:.1%}, leakage {row['leakage']:.1%}")
    write_json(table_path, table)
    plot_trigger_eval(table, out / PLOT_FILE)
    return table[-1]
