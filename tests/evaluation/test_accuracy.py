"""Unit tests for `posttrain eval` (posttrain.commands.eval) and its measures (posttrain.evaluation.accuracy)."""

from __future__ import annotations

import itertools

import pytest

from posttrain.commands.eval import EvalConfig
from posttrain.config import load_config, parse_overrides
from posttrain.errors import ConfigError
from posttrain.evaluation.accuracy import pass_at_k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 0.25),  # one draw, 1 of 4 correct
        (4, 1, 4, 1.0),  # all 4 drawn: the correct one is always among them
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 1, 0.4),  # k=1 is the plain fraction correct
        (10, 3, 2, 1 - 21 / 45),  # 1 - C(7,2)/C(10,2)
        (4, 0, 1, 0.0),  # nothing correct
        (4, 0, 4, 0.0),
        (3, 2, 2, 1.0),  # n - c = 1 < k = 2: any 2 draws include a correct one
        (4, 4, 1, 1.0),  # all correct
    ],
)
def test_pass_at_k_hand_worked(n, c, k, expected):
    """pass@k = 1 - C(n-c, k) / C(n, k), and 1.0 when n - c < k."""
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_zero_correct_is_exactly_zero():
    """With c = 0 the estimate is exactly 0 for every k."""
    assert [pass_at_k(6, 0, k) for k in range(1, 7)] == [0.0] * 6


@pytest.mark.parametrize("n", [1, 3, 5])
def test_pass_at_k_matches_enumeration(n):
    """Brute force over all k-subsets of n samples with c correct gives the same value."""
    for c in range(n + 1):
        for k in range(1, n + 1):
            samples = [True] * c + [False] * (n - c)
            subsets = list(itertools.combinations(samples, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute), (n, c, k)


def test_pass_at_k_monotone_in_k():
    """More draws never lower pass@k."""
    values = [pass_at_k(10, 2, k) for k in range(1, 11)]
    assert values == sorted(values)
    assert values[0] == pytest.approx(0.2) and values[-1] == 1.0


def test_eval_config_rejects_pass_k_above_num_samples():
    """pass_k larger than num_samples is a ConfigError from load_config."""
    with pytest.raises(ConfigError, match=r"'pass_k'.*\[1, num_samples=2\]"):
        load_config(EvalConfig, values={"num_samples": 2, "pass_k": [1, 4]})


@pytest.mark.parametrize("pass_k", [[0], [1.5], ["two"]])
def test_eval_config_rejects_non_positive_or_non_int_k(pass_k):
    """Each k must be an int >= 1; the error names pass_k (or the element, pass_k[0])."""
    with pytest.raises(ConfigError, match=r"'pass_k(\[0\])?'"):
        load_config(EvalConfig, values={"num_samples": 4, "pass_k": pass_k})


def test_eval_config_accepts_valid_pass_k():
    """k values within [1, num_samples] load, including the YAML flow list form on the command line."""
    config = load_config(EvalConfig, values={"num_samples": 4, "pass_k": [1, 4]})
    assert (config.num_samples, config.pass_k) == (4, [1, 4])
    config = load_config(EvalConfig, overrides=parse_overrides(["--num_samples", "4", "--pass_k", "[1, 2]"]))
    assert config.pass_k == [1, 2]


def test_eval_config_pass_k_unchecked_for_greedy_only():
    """With num_samples = 0 (greedy only) pass_k is not checked."""
    assert load_config(EvalConfig, values={"num_samples": 0, "pass_k": [8]}).pass_k == [8]


def test_eval_config_bounds():
    """Field bounds apply with messages naming the key (top_p <= 1, temperature > 0, batch_size >= 1)."""
    with pytest.raises(ConfigError, match="config key 'top_p' must be <= 1, got 1.5"):
        load_config(EvalConfig, values={"top_p": 1.5})
    with pytest.raises(ConfigError, match="config key 'temperature' must be > 0, got 0.0"):
        load_config(EvalConfig, values={"temperature": 0})
    with pytest.raises(ConfigError, match="config key 'batch_size' must be >= 1, got 0"):
        load_config(EvalConfig, overrides={"batch_size": "0"})


def test_eval_config_negative_num_samples_names_num_samples():
    """A negative num_samples is reported against num_samples, not pass_k."""
    with pytest.raises(ConfigError, match="config key 'num_samples' must be >= 0, got -1"):
        load_config(EvalConfig, overrides={"num_samples": "-1"})


def test_eval_config_pass_k_comma_form_on_command_line():
    """`--num_samples 4 --pass_k 1,4` gives the integer list [1, 4]."""
    config = load_config(EvalConfig, overrides=parse_overrides(["--num_samples", "4", "--pass_k", "1,4"]))
    assert config.pass_k == [1, 4]


# --- run_eval with the tiny model ----------------------------------------------------------


def test_run_eval_writes_consistent_artifacts(tiny_model_dir, tmp_path):
    import json

    from posttrain.commands.eval import run_eval

    config = load_config(EvalConfig, values={"model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path),
                                             "num_examples": 6, "max_new_tokens": 8, "num_samples": 2, "pass_k": [1, 2]})
    metrics = run_eval(config)
    saved = json.loads((tmp_path / "eval.json").read_text())
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert saved == metrics
    assert len(predictions) == 6 == metrics["num_examples"]
    assert metrics["accuracy"] == sum(p["reward"] for p in predictions) / 6
    assert set(predictions[0]) == {"prompt", "completion", "reward", "feedback", "answer", "follows_format"}
    assert metrics["format_compliance"] == sum(p["follows_format"] for p in predictions) / 6
    assert {"pass@1", "pass@2"} <= set(metrics) and metrics["pass@1"] <= metrics["pass@2"]
    # an untrained model does not solve arithmetic, and each failure comes with feedback
    assert all(p["feedback"] for p in predictions if p["reward"] == 0.0)


def test_run_eval_scores_a_perfect_model_as_perfect(tiny_model_dir, tmp_path, monkeypatch):
    """Accuracy counts exactly the verified answers: feed the reference solutions through."""
    import posttrain.commands.eval as eval_command
    from posttrain.tasks.arithmetic import ArithmeticTask

    rows = ArithmeticTask().make_dataset("test", n=5)
    answers = {r["prompt"]: r["completion"] for r in rows}
    answers[rows[0]["prompt"]] = "wrong. Answer: 1"

    def oracle(model, tokenizer, prompts, **kwargs):
        texts = [[next(a for p, a in answers.items() if p in prompt)] for prompt in prompts]
        return texts, [[5] for _ in prompts]

    monkeypatch.setattr(eval_command, "generate", oracle)
    config = load_config(EvalConfig, values={"model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path), "num_examples": 5})
    assert eval_command.run_eval(config)["accuracy"] == 0.8


def test_run_eval_base_mode_uses_instruction_format_and_stops_at_end(tiny_model_dir, tmp_path, monkeypatch):
    import posttrain.commands.eval as eval_command

    seen = {}

    def record(model, tokenizer, prompts, **kwargs):
        seen.update(prompts=prompts, stop=kwargs.get("stop_strings"), template=tokenizer.chat_template)
        # the first response closes with END (kept by generate for the compliance check), the second runs on
        return [[" Answer: 0\nEND"], [" Answer: 0 Answer: 0"]], [[6], [64]]

    monkeypatch.setattr(eval_command, "generate", record)
    config = load_config(EvalConfig, values={"model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path),
                                             "num_examples": 2, "base_model_mode": True})
    metrics = eval_command.run_eval(config)
    assert seen["prompts"][0].startswith("Instruction: What is ") and seen["prompts"][0].endswith("\nResponse:")
    assert seen["stop"] == ["END"] and seen["template"] is None
    assert metrics["format_compliance"] == 0.5
    saved = (tmp_path / "predictions.jsonl").read_text()
    assert "END" not in saved  # scored and stored without the stop marker


@pytest.mark.parametrize(
    "completion, num_tokens, base, expected",
    [
        (" 3+4=7 carry 0. Answer: 7\nEND", 12, True, True),  # closed with END
        (" 3+4=7 carry 0. Answer: 7", 12, True, False),  # stopped (EOS) without END
        (" Answer: 7\nEND<|im_end|>", 12, True, False),  # chat markup in a base model's output
        (" Answer: 7 Answer: 7 Answer", 64, True, False),  # ran into the budget
        ("Answer: 7", 12, False, True),  # chat model ended its turn
        ("Answer: 7 Answer: 7 Answer", 64, False, False),  # cut off by max_new_tokens
    ],
)
def test_follows_format(completion, num_tokens, base, expected):
    from posttrain.evaluation.accuracy import follows_format

    assert follows_format(completion, num_tokens, 64, base) is expected


def test_premise_check_scores_each_teacher_context(tiny_model_dir, tmp_path, monkeypatch):
    """An oracle that solves a problem only when a solution is in its prompt: plain 0, solution
    in context 1, feedback in context 0; the contexts are SDPO's teacher prompts, chat-rendered."""
    import json

    import posttrain.commands.eval as eval_command
    from posttrain.tasks.arithmetic import ArithmeticTask

    rows = ArithmeticTask().make_dataset("test", n=4)
    seen = []

    def oracle(model, tokenizer, prompts, **kwargs):
        seen.append(prompts)
        texts = []
        for prompt in prompts:
            row = next(r for r in rows if r["prompt"] in prompt)
            texts.append([row["completion"] if "Correct solution:" in prompt else "wrong. Answer: 1"])
        return (texts, [[5] for _ in prompts]) if kwargs.get("return_token_counts") else texts

    monkeypatch.setattr(eval_command, "generate", oracle)
    config = load_config(EvalConfig, values={"model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path),
                                             "num_examples": 4, "premise_check": True})
    metrics = eval_command.run_eval(config)
    assert (metrics["premise/plain"], metrics["premise/demonstration"], metrics["premise/feedback"]) == (0.0, 1.0, 0.0)
    assert metrics["accuracy"] == 0.0 and json.loads((tmp_path / "eval.json").read_text()) == metrics
    demonstration_prompts = seen[2]  # greedy, plain, solution, feedback
    task = ArithmeticTask()
    assert task.hinted_prompt(rows[0]) in demonstration_prompts[0]
    assert "<|im_start|>user\n" in demonstration_prompts[0]  # rendered with the chat template, as the teacher sees it
    assert all("feedback from your unsuccessful earlier attempt" in p for p in seen[3])


def test_premise_check_needs_a_chat_model_and_says_so_before_loading(tmp_path):
    # the model directory does not exist: the config error comes first, before any loading
    with pytest.raises(ConfigError, match="premise_check"):
        load_config(EvalConfig, values={"model_name_or_path": str(tmp_path / "missing"), "output_dir": str(tmp_path),
                                        "num_examples": 2, "premise_check": True, "base_model_mode": True})


def test_run_eval_few_shot_prompts_a_base_model_with_examples_and_cuts_at_the_next_one(tiny_model_dir, tmp_path, monkeypatch):
    import posttrain.commands.eval as eval_command

    seen = {}

    def record(model, tokenizer, prompts, **kwargs):
        seen.update(prompts=prompts, stop=kwargs.get("stop_strings"))
        # the first answers and closes; the second answers, then writes the next example (no END)
        return [[" 1+2=3 carry 0. Answer: 0\nEND"], [" Answer: 0\nInstruction: What is 1 + 1?\nResponse: Answer: 2"]], [[6], [20]]

    monkeypatch.setattr(eval_command, "generate", record)
    config = load_config(EvalConfig, values={"model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path),
                                             "num_examples": 2, "base_model_mode": True, "few_shot": 3})
    metrics = eval_command.run_eval(config)
    first = seen["prompts"][0]
    assert first.count("\nEND\n\nInstruction: ") == 3 and first.endswith("\nResponse:")  # three examples, then the problem
    assert seen["stop"] == ["END", "\nInstruction:"]
    assert metrics["format_compliance"] == 0.5  # only the first closed with END
    predictions = (tmp_path / "predictions.jsonl").read_text()
    assert "What is 1 + 1" not in predictions  # the made-up next example is cut off before scoring


def test_few_shot_needs_base_model_mode(tmp_path):
    with pytest.raises(ConfigError, match="few_shot"):
        load_config(EvalConfig, values={"model_name_or_path": str(tmp_path / "missing"), "output_dir": str(tmp_path), "few_shot": 3})
