"""posttrain discover: test-time SDPO against best-of-k, counted as discovery@k."""

from __future__ import annotations

import json
import sys

import pytest

from posttrain.commands.discover import DiscoverConfig, run_discover
from posttrain.config import load_config
from posttrain.errors import ConfigError
from posttrain.evaluation.accuracy import discovery_at_k

G = 4

# Succeeds on the first problem it is asked about, at the 3rd completion of its 2nd scoring call,
# and never on any other problem; records every call. The trainer's check before training scores
# empty completions: those calls are not counted.
REWARD_MODULE = '''
calls = []


def scripted(prompts, completions, **kwargs):
    texts = [c[-1]["content"] for c in completions]
    if not any(texts):
        return [0.0] * len(texts)
    problem = prompts[0][-1]["content"]
    calls.append((problem, len(texts)))
    first = calls[0][0]
    nth = sum(p == problem for p, _ in calls)
    return [1.0 if problem == first and nth == 2 and i == 2 else 0.0 for i in range(len(texts))]
'''


def test_discovery_at_k_by_hand():
    firsts = [3, None, 9, 1]  # solved at attempts 3 and 9 and 1; one never
    assert discovery_at_k(firsts, 1) == 0.25
    assert discovery_at_k(firsts, 3) == 0.5
    assert discovery_at_k(firsts, 8) == 0.5
    assert discovery_at_k(firsts, 9) == 0.75
    with pytest.raises(ValueError):
        discovery_at_k([], 4)


@pytest.fixture
def scripted_reward(importable_module):
    return importable_module(REWARD_MODULE)


def discover_config(model_dir, out, **values) -> DiscoverConfig:
    base = {"model_name_or_path": model_dir, "output_dir": str(out), "dataset_name": "task:arithmetic",
            "dataset_train_split": "test[:2]", "num_generations": G, "budget": 3 * G, "max_completion_length": 8,
            "max_pass_rate": None, "learning_rate": 1e-4}
    return load_config(DiscoverConfig, values={**base, **values})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"budget": 10}, r"'budget' \(10\) must be a multiple of num_generations \(4\)"),
        ({"max_pass_rate": 0.03, "pass_rate_seed": 0, "seed": 0}, "'pass_rate_seed' and 'seed' must differ"),
        ({"grpo_weight": 1.0}, "test-time SDPO needs a teacher"),
        ({"method": "beam"}, "'method'.*must be one of sdpo, sampling"),
    ],
)
def test_bad_discover_config_values(values, message):
    with pytest.raises(ConfigError, match=message):
        discover_config("/no/model", "/no/out", **values)


def test_test_time_sdpo_counts_attempts_and_stops_at_the_first_success(tiny_model_dir, tmp_path, scripted_reward):
    """Problem 0 succeeds in its 2nd group, 3rd sample: attempt G + 3, and its run stops after that
    step (2 of 3); problem 1 never succeeds and runs its whole budget (3 steps)."""
    config = discover_config(tiny_model_dir, tmp_path, reward_functions=[f"{scripted_reward}:scripted"])
    metrics = run_discover(config)
    calls = sys.modules[scripted_reward].calls
    assert [n for _, n in calls] == [G] * 5  # one group per step: 2 steps for problem 0, 3 for problem 1
    assert len({p for p, _ in calls[:2]}) == 1 and calls[2][0] != calls[0][0]
    result = json.loads((tmp_path / "discovery.json").read_text())
    assert [p["first_success"] for p in result["problems"]] == [G + 3, None]
    assert result["discovery"] == {"4": 0.0, "8": 0.5, "12": 0.5}
    assert metrics["discovery@8"] == 0.5 and metrics["num_problems"] == 2
    steps = [json.loads(line) for line in (tmp_path / "problem-0" / "metrics.jsonl").read_text().splitlines()]
    assert max(s.get("step", 0) for s in steps) == 2


def test_best_of_k_draws_the_budget_at_once_and_a_rerun_skips_what_is_done(tiny_model_dir, tmp_path, scripted_reward):
    """Best-of-k: one call of ``budget`` attempts per problem, from the unchanged model. Problem 0's
    only success is its 2nd call's, so here nothing is found; then a rerun scores nothing again."""
    config = discover_config(tiny_model_dir, tmp_path, method="sampling", reward_functions=[f"{scripted_reward}:scripted"])
    run_discover(config)
    calls = sys.modules[scripted_reward].calls
    assert [n for _, n in calls] == [3 * G, 3 * G]
    assert [p["first_success"] for p in json.loads((tmp_path / "discovery.json").read_text())["problems"]] == [None, None]
    run_discover(config)
    assert len(calls) == 2
    with pytest.raises(ConfigError, match="holds a run with method sampling and budget 12, not sdpo and 12"):
        run_discover(discover_config(tiny_model_dir, tmp_path, reward_functions=[f"{scripted_reward}:scripted"]))


def test_problems_are_chosen_by_pass_rate_and_the_estimates_reused(tiny_model_dir, tmp_path):
    """Pass rates from the starting model's samples (the tiny random model solves nothing: all 0,
    all qualify); another run reads them from pass_rates_from and keeps only those below the bar."""
    first = discover_config(tiny_model_dir, tmp_path / "a", method="sampling", dataset_train_split="test[:3]",
                            max_pass_rate=0.03, pass_rate_samples=2, max_problems=2, budget=G)
    run_discover(first)
    estimates = json.loads((tmp_path / "a" / "pass_rates.json").read_text())
    assert estimates["pass_rates"] == [0.0, 0.0, 0.0] and estimates["samples"] == 2
    assert [p["index"] for p in json.loads((tmp_path / "a" / "discovery.json").read_text())["problems"]] == [0, 1]
    (tmp_path / "a" / "pass_rates.json").write_text(json.dumps({"pass_rates": [0.0, 0.5, 0.0]}))
    (tmp_path / "a" / "discovery.json").unlink()
    run_discover(first)  # a rerun reads its own estimates instead of sampling again
    assert [p["index"] for p in json.loads((tmp_path / "a" / "discovery.json").read_text())["problems"]] == [0, 2]

    (tmp_path / "rates.json").write_text(json.dumps({"pass_rates": [0.5, 0.0, 0.02]}))
    reused = discover_config(tiny_model_dir, tmp_path / "b", method="sampling", dataset_train_split="test[:3]",
                             max_pass_rate=0.03, pass_rates_from=str(tmp_path / "rates.json"), budget=G)
    run_discover(reused)
    assert [p["index"] for p in json.loads((tmp_path / "b" / "discovery.json").read_text())["problems"]] == [1, 2]
    assert not (tmp_path / "b" / "pass_rates.json").exists()

    (tmp_path / "short.json").write_text(json.dumps({"pass_rates": [0.0]}))
    with pytest.raises(ConfigError, match="holds 1 pass rates for the 3 problems"):
        run_discover(discover_config(tiny_model_dir, tmp_path / "c", method="sampling", dataset_train_split="test[:3]",
                                     max_pass_rate=0.03, pass_rates_from=str(tmp_path / "short.json"), budget=G))


def test_discover_refuses_to_run_in_several_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="runs in one process"):
        run_discover(discover_config("/no/model", tmp_path))
