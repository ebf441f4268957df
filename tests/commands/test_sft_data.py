"""Unit tests for ``posttrain sft-data`` (posttrain.commands.sft_data.run_sft_data)."""

from __future__ import annotations

import json

import pytest

from posttrain.commands.sft_data import SFTDataConfig, run_sft_data
from posttrain.config import load_config
from posttrain.errors import ConfigError, DataError


def _run(tmp_path, rows, **values):
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = load_config(SFTDataConfig, values={"rollouts": str(path), "output_dir": str(tmp_path / "out"), **values})
    summary = run_sft_data(config)
    text = (tmp_path / "out" / "sft.jsonl").read_text(encoding="utf-8")
    return summary, [json.loads(line) for line in text.splitlines()]


ROLLOUTS = [
    {
        "prompt": "What is the capital of France?",
        "completions": [
            "  The capital is Paris.\n",  # kept (stripped)
            "Paris is the capital.<|im_end|>\n<|im_start|>user\nThanks",  # chat markup
            "Paris",  # too short
            "the   CAPITAL is\tparis.",  # duplicate after case/whitespace normalisation
            "Another perfectly good answer.",  # over max_per_prompt
        ],
    },
    {
        "prompt": "Why is the sky blue?",
        "completions": [
            "THE capital is Paris.",  # duplicate of another prompt's completion
            "[INST] explain [/INST] Because of scattering.",  # chat markup
            "Rayleigh scattering of sunlight.",  # kept
        ],
    },
    {"prompt": "Say yes.", "completions": ["Yes.", "  ", "yes yes"]},  # all too short (min_words 3)
]


def test_filters_and_counts(tmp_path):
    summary, rows = _run(tmp_path, ROLLOUTS)
    assert rows == [
        {"prompt": "What is the capital of France?", "completion": "The capital is Paris."},
        {"prompt": "Why is the sky blue?", "completion": "Rayleigh scattering of sunlight."},
    ]
    assert summary["rollout_rows"] == 3
    assert summary["written"] == 2
    assert summary["dropped_chat_markup"] == 2
    assert summary["dropped_too_short"] == 4  # "Paris", "Yes.", "  ", "yes yes"
    assert summary["dropped_duplicate"] == 2
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_rows_are_prompt_and_completion_only(tmp_path):
    rows_in = [{"id": "x", "prompt": "P?", "completions": ["\n  one two three  \n"], "fields": {"a": 1}}]
    _, rows = _run(tmp_path, rows_in)
    assert rows == [{"prompt": "P?", "completion": "one two three"}]


def test_max_per_prompt(tmp_path):
    completions = [f"answer number {i} here" for i in range(5)]
    _, rows = _run(tmp_path, [{"prompt": "P?", "completions": completions}, {"prompt": "Q?", "completions": completions[:1] + ["a fresh reply"]}], max_per_prompt=3)
    assert [r["completion"] for r in rows if r["prompt"] == "P?"] == completions[:3]
    # Q's first completion was kept for P: a duplicate; its other one is new
    assert [r["completion"] for r in rows if r["prompt"] == "Q?"] == ["a fresh reply"]


def test_max_per_prompt_counts_distinct_completions(tmp_path):
    """Duplicates within a prompt do not use up its quota."""
    completions = ["one two three", "ONE  two three", "four five six"]
    _, rows = _run(tmp_path, [{"prompt": "P?", "completions": completions}], max_per_prompt=2)
    assert [r["completion"] for r in rows] == ["one two three", "four five six"]


@pytest.mark.parametrize("min_words, kept", [(0, 3), (1, 3), (2, 2), (3, 1), (4, 0)])
def test_min_words(tmp_path, min_words, kept):
    completions = ["one", "one two", "one two three"]
    summary, rows = _run(tmp_path, [{"prompt": "P?", "completions": completions}], min_words=min_words, max_per_prompt=5)
    assert len(rows) == kept
    assert summary.get("dropped_too_short", 0) == 3 - kept


def test_chat_markup_checked_before_length(tmp_path):
    """A short contaminated completion is counted as chat markup."""
    summary, rows = _run(tmp_path, [{"prompt": "P?", "completions": ["<|eot_id|>", "plain text answer"]}])
    assert summary["dropped_chat_markup"] == 1 and "dropped_too_short" not in summary
    assert [r["completion"] for r in rows] == ["plain text answer"]


def test_empty_rollouts_key_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="rollouts"):
        run_sft_data(load_config(SFTDataConfig, values={"output_dir": str(tmp_path / "out")}))


def test_max_per_prompt_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="max_per_prompt"):
        load_config(SFTDataConfig, values={"rollouts": "r.jsonl", "max_per_prompt": 0})


def test_missing_completions_is_a_data_error(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(json.dumps({"prompt": "P?"}) + "\n")
    with pytest.raises(DataError, match=f"{path}:1: missing field 'completions'"):
        run_sft_data(load_config(SFTDataConfig, values={"rollouts": str(path), "output_dir": str(tmp_path / "out")}))


def test_verify_task_keeps_only_what_the_verifier_accepts(tmp_path):
    """Rejection sampling: a wrong answer is dropped and counted, a right one kept (the row's
    fields reach the verifier; without them it parses the prompt)."""
    from posttrain.tasks.arithmetic import solve

    rows = [
        {"prompt": "What is 47 + 38?", "fields": {"a": 47, "b": 38, "answer": 85},
         "completions": [solve(47, 38, 2).replace("Answer: 85", "Answer: 84"), solve(47, 38, 2)]},
        {"prompt": "What is 12 + 30?", "completions": ["2+0=2 carry 0. Answer: 42 and more"]},  # no fields
    ]
    summary, kept = _run(tmp_path, rows, verify_task="arithmetic")
    assert kept == [{"prompt": "What is 47 + 38?", "completion": solve(47, 38, 2)},
                    {"prompt": "What is 12 + 30?", "completion": "2+0=2 carry 0. Answer: 42 and more"}]
    assert summary["dropped_incorrect"] == 1
    # without verify_task the wrong one is kept (first of its prompt)
    _, unverified = _run(tmp_path, rows)
    assert unverified[0]["completion"].endswith("Answer: 84")


def test_unknown_verify_task_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        _run(tmp_path, ROLLOUTS, verify_task="nope")
