"""``posttrain rm``: a reward model trained through the CLI, then used by path as the
``reward_model`` judge (what ``posttrain pairs`` uses) and as ``posttrain eval``'s scorer."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import pytest
import torch

from posttrain.cli import main
from posttrain.commands.rm import RMJobConfig, saved_model_evaluation
from posttrain.config import load_config
from posttrain.data.reward import tokenize_reward_pairs
from posttrain.errors import ConfigError
from posttrain.judges.reward_model import RewardModelJudge

# one pattern a tiny model learns in a few steps: a worked answer beats a non-answer
PAIRS = [{"prompt": f"What is {i} + 1?", "chosen": f"The answer is {i + 1}.", "rejected": "banana banana"} for i in range(16)]
VAL_RATIO, SEED = 0.25, 3


def write_rows(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def rm_argv(model: str, data: str, out, *extra) -> list[str]:
    return ["rm", "--model_name_or_path", model, "--dataset_name", data, "--output_dir", str(out), "--max_steps", "12",
            "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "4",
            "--save_strategy", "no", "--seed", str(SEED), *extra]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> tuple:
    """``posttrain rm`` through the CLI with a quarter of the pairs held out: (output dir, printed metrics)."""
    tmp = tmp_path_factory.mktemp("rm")
    stdout = io.StringIO()  # capsys is per test; this run is shared by the module
    with contextlib.redirect_stdout(stdout):
        code = main(rm_argv(tiny_model_dir, write_rows(tmp / "pairs.jsonl", PAIRS), tmp / "out", "--val_ratio", str(VAL_RATIO)))
    assert code == 0
    printed = stdout.getvalue()  # transformers' progress logs, then posttrain's metrics as JSON
    return tmp / "out", json.loads(printed[printed.rindex("{\n"):])


@pytest.mark.slow
def test_trained_model_is_the_judge_that_prefers_chosen(trained):
    """The output directory loads by path as the reward_model judge, which scores every chosen
    response above its rejected one, and its scores are the model's on exactly the ids trained on."""
    out, metrics = trained
    judge = RewardModelJudge(str(out))
    assert judge.model.config.num_labels == 1
    for pair in PAIRS:
        verdict = judge.compare(pair["prompt"], pair["chosen"], pair["rejected"])
        assert verdict.preferred == "a", pair
    ids = tokenize_reward_pairs(judge.tokenizer, PAIRS[:1], max_length=512)[0]["chosen_ids"]
    with torch.no_grad():
        trained_on = judge.model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert judge.score(PAIRS[0]["prompt"], PAIRS[0]["chosen"]) == pytest.approx(trained_on, abs=1e-5)


@pytest.mark.slow
def test_metrics_are_trls_with_held_out_accuracy(trained):
    """TRL's accuracy and margin every logging step; on the held-out pairs (val_ratio, evaluated
    every eval_steps = logging_steps and at the end) the final model's, returned as the result."""
    out, metrics = trained
    split = load_config(RMJobConfig, values={"val_ratio": VAL_RATIO, "seed": SEED}).split_rows(list(enumerate(PAIRS)))
    held_out = [pair for _, pair in split[1]]
    judge = RewardModelJudge(str(out))
    margins = [judge.score(p["prompt"], p["chosen"]) - judge.score(p["prompt"], p["rejected"]) for p in held_out]
    assert metrics["eval_accuracy"] == 1.0 and all(margin > 0 for margin in margins)
    assert metrics["eval_margin"] == pytest.approx(sum(margins) / len(margins), rel=1e-4)
    assert metrics["global_step"] == 12
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "loss" in row]
    assert [row["step"] for row in steps] == [1, 4, 8, 12]
    assert {"accuracy", "margin", "mean_reward"} <= set(steps[0])
    assert steps[-1]["loss"] < steps[0]["loss"] and steps[-1]["accuracy"] == 1.0
    assert [row["step"] for row in logged if "eval_accuracy" in row] == [4, 8, 12]


@pytest.mark.slow
def test_eval_scores_completions_with_the_trained_model(tiny_model_dir, trained, tmp_path, capsys):
    out, _ = trained
    data = write_rows(tmp_path / "prompts.jsonl", [{"prompt": p["prompt"]} for p in PAIRS[:2]])
    code = main(["eval", "--model_name_or_path", tiny_model_dir, "--data_file", data, "--scorer", "reward_model",
                 "--judge_model", str(out), "--max_new_tokens", "4", "--output_dir", str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr().err
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    judge = RewardModelJudge(str(out))
    assert [p["score"] for p in predictions] == pytest.approx([judge.score(p["prompt"], p["completion"]) for p in predictions], abs=1e-5)


@pytest.mark.slow
def test_lora_run_saves_a_merged_reward_model(tiny_model_dir, tmp_path, capsys):
    """A LoRA adapter and its trained score head, merged: a plain model a judge loads by path."""
    data = write_rows(tmp_path / "pairs.jsonl", PAIRS)
    assert main(rm_argv(tiny_model_dir, data, tmp_path / "out", "--use_peft", "true", "--lora_r", "4", "--max_steps", "4")) == 0
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    judge = RewardModelJudge(str(tmp_path / "out"))
    assert type(judge.model).__name__ == "Qwen2ForSequenceClassification"
    assert all(judge.compare(p["prompt"], p["chosen"], p["rejected"]).preferred == "a" for p in PAIRS)


def test_the_result_is_the_evaluation_of_the_saved_model(tmp_path):
    """The last evaluation, or with load_best_model_at_end that of the checkpoint it loaded."""
    history = [{"loss": 0.5, "step": 4}, *({"eval_accuracy": a, "eval_margin": m, "step": s, "epoch": 1.0}
                                         for a, m, s in [(0.5, 0.1, 4), (1.0, 0.9, 8), (0.75, 0.6, 12)])]

    def trainer(best: str | None):
        return SimpleNamespace(state=SimpleNamespace(log_history=history, best_model_checkpoint=best),
                               args=SimpleNamespace(load_best_model_at_end=best is not None))

    assert saved_model_evaluation(trainer(None)) == {"eval_accuracy": 0.75, "eval_margin": 0.6}
    (tmp_path / "checkpoint-8").mkdir()
    assert saved_model_evaluation(trainer(str(tmp_path / "checkpoint-8"))) == {"eval_accuracy": 1.0, "eval_margin": 0.9}
    assert saved_model_evaluation(SimpleNamespace(state=SimpleNamespace(log_history=history[:1]),
                                                  args=SimpleNamespace(load_best_model_at_end=False))) == {}


def test_qlora_is_refused_with_the_key():
    with pytest.raises(ConfigError, match="'load_in_4bit'"):
        load_config(RMJobConfig, values={"load_in_4bit": True})


def test_an_adapter_directory_is_refused(tiny_model_dir, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": tiny_model_dir}))
    data = write_rows(tmp_path / "pairs.jsonl", PAIRS[:2])
    assert main(rm_argv(str(adapter), data, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("posttrain rm: error: ") and "LoRA adapter" in err and "posttrain export" in err


@pytest.mark.slow
def test_chat_template_kwargs_render_training_and_judging_alike(tiny_model_dir, tmp_path, capsys):
    """``chat_template_kwargs`` reach every pair's text, and the judge renders with the ones the model
    was trained with (saved beside it): otherwise it would score text it never saw."""
    import shutil

    from posttrain.data.reward import RENDERING_FILE, reward_model_text

    model = tmp_path / "thinking-model"
    shutil.copytree(tiny_model_dir, model)
    template = model / "chat_template.jinja"
    template.write_text("{%- if enable_thinking is defined and not enable_thinking %}no-think {% endif %}" + template.read_text())
    out = tmp_path / "out"
    argv = rm_argv(str(model), write_rows(tmp_path / "pairs.jsonl", PAIRS), out, "--chat_template_kwargs", "{enable_thinking: false}")
    argv[argv.index("--max_steps") + 1] = "1"
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / RENDERING_FILE).read_text()) == {"chat_template_kwargs": {"enable_thinking": False}}
    judge = RewardModelJudge(str(out))
    text = reward_model_text(judge.tokenizer, "q", "a", judge.chat_template_kwargs)
    assert text.startswith("no-think <|im_start|>user\nq")
    config = load_config(RMJobConfig, values={"model_name_or_path": str(model), "dataset_name": str(tmp_path / "pairs.jsonl"),
                                              "chat_template_kwargs": {"enable_thinking": False}})
    from posttrain.commands.rm import reward_rows
    from posttrain.tasks.sources import load_rows

    (row,) = reward_rows(load_rows(str(tmp_path / "pairs.jsonl"), "train[:1]"), judge.tokenizer, config)
    assert judge.tokenizer.decode(row["chosen_ids"]).startswith("no-think ")
