"""The conformance suite: real chat templates, every decoder architecture, the hub's dataset
layouts, each tried against posttrain's commands.

Every test names the cell of a matrix it fills with the ``cell`` fixture, e.g.
``cell("templates", "qwen3", "system + two turns")``; ``benchmarks/conformance_report.py`` runs
the suite and writes ``docs/conformance.md``: one table per matrix, a row per template,
architecture or layout, a column per conversation shape or command, each cell the test's result.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def cell(record_property):
    """``cell(matrix, row, column)`` records which cell of which matrix this test fills; it returns
    ``outcome(text)``, for a test that records what it observed beyond pass or fail (e.g. "refused:
    <the one-line error>" where the input cannot be trained and posttrain says so)."""

    def record(matrix: str, row: str, column: str):
        record_property("matrix", matrix)
        record_property("row", row)
        record_property("column", column)
        return lambda text: record_property("outcome", " ".join(str(text).split())[:300])

    return record


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> str:
    """The micro Qwen2 (``make-model --preset micro``): every code path, in a fraction of a second a step."""
    from posttrain.commands.make_model import MakeModelConfig, make_model

    out = tmp_path_factory.mktemp("micro-qwen2")
    make_model(MakeModelConfig(out=str(out), preset="micro"))
    return str(out)


@pytest.fixture(scope="session")
def sft_trained_texts():
    """``sft_trained_texts(trainer)``: the text of the tokens with loss in each row of one batch of
    all the trainer's rows (the collator's ``labels``, decoded), sorted."""

    def texts(trainer) -> list[str]:
        batch = next(iter(trainer.get_train_dataloader()))
        decode = trainer.processing_class.decode
        return sorted(decode(ids[labels != -100]) for ids, labels in zip(batch["input_ids"], batch["labels"]))

    return texts
