"""``posttrain eval`` on the user's own JSONL (``data_file``): rule and verifier scorers, judges as
scorers, win rate against a baseline, bad input, the CLI and a pipeline stage.

The task-based evaluation is tested in tests/evaluation/test_accuracy.py. Tests that script the
completions replace ``generate`` in the command's module; the models still load for real.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

import posttrain.commands.eval as eval_command
import posttrain.judges.factory as judge_factory
from posttrain.cli import main
from posttrain.commands.eval import EvalConfig, run_eval
from posttrain.config import load_config
from posttrain.errors import ConfigError, DataError
from posttrain.evaluation.scorers import numeric_match


def write_rows(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def read_predictions(out) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def script_generation(monkeypatch, greedy: list[dict[str, str]], samples: dict[str, list[str]] | None = None) -> None:
    """Replace generation: the n-th model loaded answers a prompt that contains key k with
    ``greedy[n][k]``; sampled completions of such a prompt are ``samples[k]``."""
    greedy_calls = []

    def pick(table: dict, prompt: str):
        return next(value for key, value in table.items() if key in prompt)

    def fake_generate(model, tokenizer, prompts, **kwargs):
        if kwargs.get("do_sample"):
            return [pick(samples, prompt) for prompt in prompts]
        table = greedy[len(greedy_calls)]
        greedy_calls.append(prompts)
        return [[pick(table, prompt)] for prompt in prompts], [[3] for _ in prompts]

    monkeypatch.setattr(eval_command, "generate", fake_generate)


def config(tiny_model_dir, out, data_file, **values) -> EvalConfig:
    return load_config(EvalConfig, values={"model_name_or_path": tiny_model_dir, "output_dir": str(out),
                                           "data_file": data_file, "max_new_tokens": 6, **values})


# -- rule and verifier scorers ------------------------------------------------------------------------


def test_cli_scores_a_jsonl_with_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    """Through the CLI, with real generation: plain and chat prompts, every row's score recomputed."""
    data = write_rows(tmp_path / "data.jsonl", [
        {"prompt": "What is 2 + 3?", "reference": "5"},
        {"prompt": [{"role": "user", "content": "What is 40 + 2?"}], "reference": 42},
        {"prompt": "What is 7 + 1?", "reference": "8"},
    ])
    out = tmp_path / "out"
    code = main(["eval", "--model_name_or_path", tiny_model_dir, "--data_file", data, "--scorer", "numeric",
                 "--tolerance", "0.5", "--output_dir", str(out), "--max_new_tokens", "6"])
    assert code == 0
    metrics = json.loads((out / "eval.json").read_text())
    assert json.loads(capsys.readouterr().out) == metrics
    predictions = read_predictions(out)
    assert [p["source"] for p in predictions] == [f"{data}:1", f"{data}:2", f"{data}:3"]
    assert predictions[1]["prompt"] == [{"role": "user", "content": "What is 40 + 2?"}]
    for prediction in predictions:
        assert prediction["score"] == numeric_match(prediction["completion"], prediction["reference"], 0.5)
    assert metrics["accuracy"] == sum(p["score"] for p in predictions) / 3
    assert metrics["format_compliance"] == sum(p["follows_format"] for p in predictions) / 3
    assert {k: metrics[k] for k in ("model", "data_file", "scorer", "num_examples")} == {
        "model": tiny_model_dir, "data_file": data, "scorer": "numeric", "num_examples": 3}


@pytest.mark.parametrize(
    "scorer, options, cases, expected",
    [
        ("exact", {}, [("Paris", "Paris"), ("paris ", "Paris"), ("Lyon", "Paris")], [1.0, 0.0, 0.0]),
        ("exact", {"normalize": True}, [("Paris", "Paris"), ("paris ", "Paris"), ("Lyon", "Paris")], [1.0, 1.0, 0.0]),
        ("contains", {}, [("It is Paris.", "Paris"), ("It is Lyon.", "Paris")], [1.0, 0.0]),
        ("regex", {}, [("Answer: 85", r"Answer: 8[45]$"), ("Answer: 86", r"Answer: 8[45]$"), ("Answer: 84!", r"Answer: 8[45]$")],
         [1.0, 0.0, 0.0]),
        ("numeric", {"tolerance": 0.5}, [("so 84.5", 85), ("so 84.4", "85"), ("1,000", "1000")], [1.0, 0.0, 1.0]),
    ],
)
def test_rules_score_the_configured_fields(tiny_model_dir, tmp_path, monkeypatch, scorer, options, cases, expected):
    """Rows under other field names (question/answer); each completion scored as worked out by hand."""
    data = write_rows(tmp_path / "data.jsonl", [{"question": f"Question {i}?", "answer": ref} for i, (_, ref) in enumerate(cases)])
    script_generation(monkeypatch, [{f"Question {i}?": completion for i, (completion, _) in enumerate(cases)}])
    metrics = run_eval(config(tiny_model_dir, tmp_path, data, scorer=scorer, prompt_field="question", reference_field="answer", **options))
    predictions = read_predictions(tmp_path)
    assert [p["score"] for p in predictions] == expected
    assert [p["reference"] for p in predictions] == [ref for _, ref in cases]
    assert metrics["accuracy"] == pytest.approx(sum(expected) / len(expected))
    assert "mean_score" not in metrics and "win_rate" not in metrics


@pytest.fixture
def verifier_module(tmp_path, monkeypatch):
    """``eval_checks.py`` in the working directory: right when the completion is the reference,
    else 0 with feedback naming the row's id; ``bad`` returns a string."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval_checks.py").write_text(
        "def check(prompt, completion, reference, row):\n"
        "    if completion.strip() == reference:\n"
        "        return True\n"
        "    return 0.0, f\"expected {reference} for {row['id']}\"\n"
        "\n"
        "def bad(prompt, completion, reference, row):\n"
        "    return 'yes'\n"
    )
    yield "eval_checks"
    sys.modules.pop("eval_checks", None)


def test_verifier_scores_with_feedback_and_pass_at_k(tiny_model_dir, tmp_path, monkeypatch, verifier_module):
    data = write_rows(tmp_path / "data.jsonl", [{"prompt": "Say one", "reference": "1", "id": "a"},
                                                {"prompt": "Say two", "reference": "2", "id": "b"}])
    script_generation(monkeypatch, [{"Say one": " 1 ", "Say two": "3"}], samples={"Say one": ["0", "1"], "Say two": ["0", "4"]})
    metrics = run_eval(config(tiny_model_dir, tmp_path / "out", data, scorer="eval_checks:check", num_samples=2, pass_k=[1, 2]))
    predictions = read_predictions(tmp_path / "out")
    assert [(p["score"], p["feedback"]) for p in predictions] == [(1.0, None), (0.0, "expected 2 for b")]
    assert metrics["accuracy"] == 0.5
    # 1 of 2 samples right for the first prompt, 0 of 2 for the second
    assert (metrics["pass@1"], metrics["pass@2"]) == (0.25, 0.5)


def test_a_verifier_returning_something_else_names_the_row(tiny_model_dir, tmp_path, monkeypatch, verifier_module):
    data = write_rows(tmp_path / "data.jsonl", [{"prompt": "Say one", "reference": "1"}])
    script_generation(monkeypatch, [{"Say one": "1"}])
    with pytest.raises(DataError, match=rf"^{data}:1: verifier eval_checks:bad returned 'yes'; expected a reward"):
        run_eval(config(tiny_model_dir, tmp_path / "out", data, scorer="eval_checks:bad"))


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, args, message",
    [
        (None, [], "absent.jsonl: no such file"),
        ([{"prompt": "a", "reference": "b"}], ["--scorer", "fuzzy"],
         "config key 'scorer': unknown scorer 'fuzzy' (available: exact, regex, numeric, contains, reward_model, logprob_ab, openai, or module:function)"),
        ([{"prompt": "a", "reference": "b"}], ["--scorer", "no_such_module_xyz:check"],
         "config key 'scorer': cannot import module 'no_such_module_xyz' for verifier 'no_such_module_xyz:check'"),
        ([{"prompt": "a", "reference": "b"}], ["--scorer", "posttrain.evaluation.scorers:nope"],
         "config key 'scorer': module 'posttrain.evaluation.scorers' has no function 'nope'"),
        ([{"prompt": "a", "reference": "b"}, {"prompt": "c"}], [], "data.jsonl:2: missing field 'reference'"),
        ([{"prompt": "a", "reference": "b"}], ["--reference_field", "answer"], "data.jsonl:1: missing field 'answer'"),
        ([{"prompt": "a", "reference": "five"}], ["--scorer", "numeric"],
         "data.jsonl:1: field 'reference' must be a number for the numeric scorer, got 'five'"),
        ([{"prompt": "a", "reference": "b"}], ["--baseline_model", "x"],
         "config key 'baseline_model': a win rate needs a judge as scorer (reward_model, logprob_ab, openai), got 'exact'"),
        ([{"prompt": "a"}], ["--scorer", "reward_model", "--judge_model", "/no/such/rm"], "model path /no/such/rm does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_the_model_loads(tiny_model_dir, tmp_path, capsys, monkeypatch, rows, args, message):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(eval_command, "load_model", no_loading)
    data = tmp_path / "absent.jsonl" if rows is None else tmp_path / "data.jsonl"
    if rows is not None:
        write_rows(data, rows)
    out = tmp_path / "out"
    code = main(["eval", "--model_name_or_path", tiny_model_dir, "--data_file", str(data), "--output_dir", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.strip().startswith("posttrain eval: error: ") and err.strip().endswith(message), err
    assert not out.exists()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"baseline_model": "x"}, "a win rate is measured on the prompts of a data_file"),
        ({"data_file": "d.jsonl", "premise_check": True}, "'premise_check': SDPO's teacher contexts come from a task"),
        ({"data_file": "d.jsonl", "scorer": "numeric", "normalize": True}, "'normalize' applies to the exact and contains scorers, not 'numeric'"),
        ({"data_file": "d.jsonl", "tolerance": 0.1}, "'tolerance' applies to the numeric scorer, not 'exact'"),
        ({"data_file": "d.jsonl", "scorer": "reward_model"}, "scorer 'reward_model' needs judge_model"),
        ({"data_file": "d.jsonl", "scorer": "openai", "judge_model": "gpt"}, "scorer 'openai' needs judge_base_url"),
        ({"data_file": "d.jsonl", "scorer": "logprob_ab", "judge_model": "m", "num_samples": 2},
         "'num_samples': pass@k needs a scorer that says right or wrong, not a judge"),
        ({"data_file": "d.jsonl", "tolerance": -1}, "config key 'tolerance' must be >= 0, got -1"),
    ],
)
def test_keys_that_do_not_fit_together_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(EvalConfig, values=values)


def test_help_lists_the_data_file_keys(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    for key in ("data_file", "prompt_field", "reference_field", "scorer", "normalize", "tolerance", "baseline_model",
                "judge_model", "judge_base_url"):
        assert f"--{key} (" in out, key


# -- judges: scores and win rates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """A randomly initialised one-label reward model on the tiny model's backbone."""
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model_config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("reward-model")
    Qwen2ForSequenceClassification(model_config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def test_reward_model_scorer_gives_each_completion_its_score(tiny_model_dir, reward_model_dir, tmp_path):
    """No reference needed; each score is the reward model's, computed here independently."""
    from posttrain.judges.reward_model import RewardModelJudge

    data = write_rows(tmp_path / "data.jsonl", [{"prompt": "Write a word."}, {"prompt": [{"role": "user", "content": "Name a colour."}]}])
    metrics = run_eval(config(tiny_model_dir, tmp_path / "out", data, scorer="reward_model", judge_model=reward_model_dir))
    predictions = read_predictions(tmp_path / "out")
    judge = RewardModelJudge(reward_model_dir)
    expected = [judge.score("Write a word.", predictions[0]["completion"]), judge.score("Name a colour.", predictions[1]["completion"])]
    assert [p["score"] for p in predictions] == pytest.approx(expected, abs=1e-5)
    assert metrics["mean_score"] == pytest.approx(sum(expected) / 2, abs=1e-5)
    assert "accuracy" not in metrics


def test_win_rate_under_the_logprob_judge_loads_one_model_at_a_time(tiny_model_dir, tmp_path, monkeypatch):
    """The model, then the baseline, then the judge, each freed before the next; every verdict is
    the judge's own comparison of the two completions (computed here again)."""
    from posttrain.evaluation.win_rate import OUTCOME
    from posttrain.judges.logprob_ab import LogProbABJudge

    events = []

    def recorded(event: str, function):
        def call(*args, **kwargs):
            events.append(event)
            return function(*args, **kwargs)
        return call

    for name, event in (("load_model", "load"), ("free_model", "free")):
        monkeypatch.setattr(eval_command, name, recorded(event, getattr(eval_command, name)))
    monkeypatch.setattr(judge_factory, "build_judge", recorded("judge", judge_factory.build_judge))
    prompts = ["What is 47 + 38?", "What is 12 + 30?", "What is 99 + 1?"]
    model_says = {p: c for p, c in zip(prompts, ["Answer: 85", "The answer is 42.", "100"])}
    baseline_says = {p: c for p, c in zip(prompts, ["Answer: 84", "42", "The quick brown fox."])}
    script_generation(monkeypatch, [model_says, baseline_says])
    data = write_rows(tmp_path / "data.jsonl", [{"prompt": p} for p in prompts])
    metrics = run_eval(config(tiny_model_dir, tmp_path / "out", data, scorer="logprob_ab", judge_model=tiny_model_dir,
                              baseline_model=tiny_model_dir))
    assert events == ["load", "free", "load", "free", "judge", "free"]

    judge = LogProbABJudge(tiny_model_dir)
    predictions = read_predictions(tmp_path / "out")
    for prompt, prediction in zip(prompts, predictions):
        verdict = judge.compare(prompt, model_says[prompt], baseline_says[prompt])
        assert (prediction["completion"], prediction["baseline_completion"]) == (model_says[prompt], baseline_says[prompt])
        assert prediction["verdict"] == OUTCOME[verdict.preferred]
        assert prediction["prob_model_better"] == pytest.approx(verdict.prob_a, abs=1e-6)
        assert prediction["orders_agree"] == verdict.orders_agree
    outcomes = [p["verdict"] for p in predictions]
    assert (metrics["wins"], metrics["losses"], metrics["ties"]) == tuple(outcomes.count(o) for o in ("win", "loss", "tie"))
    assert metrics["win_rate"] == (metrics["wins"] + metrics["ties"] / 2) / 3
    assert metrics["baseline_model"] == tiny_model_dir
    assert metrics["judge_orders_agree"] == sum(p["orders_agree"] for p in predictions) / 3


def test_win_rate_under_an_api_judge_asks_both_orders_and_counts_position_bias_as_a_tie(tiny_model_dir, tmp_path, monkeypatch, api):
    prompts = ["P1", "P2", "P3", "P4"]
    script_generation(monkeypatch, [{p: f"model says {p}" for p in prompts}, {p: f"baseline says {p}" for p in prompts}])
    # each row is asked twice: the model's completion shown as A, then as B
    api.chat({"better": "A", "confidence": 1.0}).chat({"better": "B", "confidence": 1.0})  # P1: model wins both orders
    api.chat({"better": "A", "confidence": 0.8}).chat({"better": "B", "confidence": 0.6})  # P2: model wins
    api.chat({"better": "B", "confidence": 1.0}).chat({"better": "A", "confidence": 1.0})  # P3: baseline wins
    api.chat({"better": "A", "confidence": 1.0}).chat({"better": "A", "confidence": 1.0})  # P4: always the first shown
    data = write_rows(tmp_path / "data.jsonl", [{"prompt": p} for p in prompts])
    metrics = run_eval(config(tiny_model_dir, tmp_path / "out", data, scorer="openai", judge_model="judge-model",
                              judge_base_url=api.url, baseline_model=tiny_model_dir))
    assert [p["verdict"] for p in read_predictions(tmp_path / "out")] == ["win", "win", "loss", "tie"]
    assert (metrics["wins"], metrics["losses"], metrics["ties"]) == (2, 1, 1)
    assert metrics["win_rate"] == 0.625  # (2 + 1/2) / 4
    assert metrics["judge_orders_agree"] == 0.75
    assert metrics["api_requests"] == 8
    first, second = (next(m["content"] for m in body["messages"] if m["role"] == "user") for body in api.bodies[:2])
    assert "[Response A]\nmodel says P1" in first and "[Response B]\nbaseline says P1" in first
    assert "[Response A]\nbaseline says P1" in second and "[Response B]\nmodel says P1" in second


# -- pipelines ----------------------------------------------------------------------------------------


def test_pipeline_stages_evaluate_a_jsonl_and_a_win_rate_on_an_earlier_stage_output(tiny_model_dir, tmp_path):
    """A second stage reads the first stage's predictions.jsonl through ${stage}; the model against
    itself is an even match (the judge asks both orders, so identical answers tie); the report
    keeps the accuracy of the scored stage, not the win-rate stage's missing one."""
    from posttrain.pipeline.runner import run_pipeline

    data = write_rows(tmp_path / "data.jsonl", [{"prompt": f"What is {i} + 1?", "reference": str(i + 1)} for i in range(3)])
    pipeline = tmp_path / "p.yaml"
    common = f"model_name_or_path: {tiny_model_dir}, max_new_tokens: 4"
    pipeline.write_text(
        "name: jsonl-eval\nstages:\n"
        f"  - {{name: scored, command: eval, config: {{{common}, data_file: {data}, scorer: contains}}}}\n"
        f"  - {{name: versus, command: eval, config: {{{common}, data_file: '${{scored}}/predictions.jsonl', "
        f"scorer: logprob_ab, judge_model: {tiny_model_dir}, baseline_model: {tiny_model_dir}}}}}\n"
    )
    manifest = run_pipeline(pipeline, output_root=str(tmp_path / "runs"))
    scored, versus = manifest["stages"]
    assert scored["status"] == versus["status"] == "done"
    assert versus["metrics"]["data_file"] == str(tmp_path / "runs" / "jsonl-eval" / "scored" / "predictions.jsonl")
    assert (versus["metrics"]["ties"], versus["metrics"]["win_rate"]) == (3, 0.5)
    summary = json.loads((tmp_path / "runs" / "jsonl-eval" / "summary.json").read_text())
    assert summary["accuracy"][tiny_model_dir]["accuracy"] == scored["metrics"]["accuracy"]
    assert summary["accuracy"][tiny_model_dir]["eval_stage"] == "scored"
