"""posttrain rollout: schema, resumability (torn lines; kill -9 is in tests/robustness/test_faults.py), base-model prompting, sources."""

import json
from pathlib import Path

import pytest

from posttrain.commands import rollout as rollouts_module
from posttrain.commands.rollout import RolloutConfig, run_rollout
from posttrain.config import load_config
from posttrain.data.jsonl import write_jsonl
from posttrain.errors import DataError


def rollout_config(model_dir, out, **values):
    defaults = dict(model_name_or_path=model_dir, output_dir=str(out), dataset_split="train[:6]", num_samples=3,
                    batch_size=2, max_new_tokens=8, seed=5)
    return load_config(RolloutConfig, values={**defaults, **values})


def read_rows(out):
    return [json.loads(line) for line in (Path(out) / "rollouts.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_schema_and_counts(tiny_model_dir, tmp_path):
    summary = run_rollout(rollout_config(tiny_model_dir, tmp_path))
    rows = read_rows(tmp_path)
    assert summary == {"prompts": 6, "skipped_done": 0, "written": 6, "completions": 18, "contaminated": 0}
    assert [r["id"] for r in rows] == [f"task:arithmetic[{i}]" for i in range(6)]
    assert [r["seed"] for r in rows] == [5, 5, 7, 7, 9, 9]  # seed + index of the batch's first prompt
    for row in rows:
        assert len(row["completions"]) == 3 == len(row["num_tokens"])
        assert all(0 <= n <= 8 for n in row["num_tokens"])  # max_new_tokens
        assert set(row["fields"]) == {"answer", "a", "b"} and row["prompt"].startswith("What is ")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_rerun_skips_done_prompts_and_repairs_a_torn_line(tiny_model_dir, tmp_path):
    run_rollout(rollout_config(tiny_model_dir, tmp_path / "full"))
    full = read_rows(tmp_path / "full")
    partial = tmp_path / "partial" / "rollouts.jsonl"
    partial.parent.mkdir()
    # what a crash leaves: two complete rows and half of the third
    partial.write_text("".join(json.dumps(r) + "\n" for r in full[:2]) + json.dumps(full[2])[:40])
    summary = run_rollout(rollout_config(tiny_model_dir, tmp_path / "partial"))
    rows = read_rows(tmp_path / "partial")  # every line parses: no torn line left
    assert summary["skipped_done"] == 2 and summary["written"] == 4
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in full)  # no duplicates, none missing
    assert rows[:2] == full[:2]  # done rows were not regenerated


def test_base_model_mode_uses_few_shot_prompts_and_stops_at_end(tiny_model_dir, tmp_path, monkeypatch):
    seen = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen.update(prompts=prompts, stop=kwargs["stop_strings"], template=tokenizer.chat_template)
        return [["3+4=7. Answer: 7", "<|im_start|>assistant\nhi"] for _ in prompts], [[5, 4] for _ in prompts]

    monkeypatch.setattr(rollouts_module, "generate", fake_generate)
    summary = run_rollout(rollout_config(tiny_model_dir, tmp_path, base_model_mode=True, few_shot=4, num_samples=2,
                                         dataset_split="train[:2]"))
    prompt = seen["prompts"][0]
    assert prompt.count("\nEND") == 4 and prompt.endswith("\nInstruction: What is 58 + 27?\nResponse:")
    assert seen["stop"] == ["END", "\n\nHuman:"] and seen["template"] is None
    assert "<|im_start|>" not in prompt
    assert summary["contaminated"] == 2
    assert all(row["contaminated"] for row in read_rows(tmp_path))


def test_base_model_mode_with_zero_shots_prompts_as_sft_trained(tiny_model_dir, tmp_path, monkeypatch):
    """few_shot: 0 is the prompt an SFT model of the base format was trained on and is evaluated with."""
    seen = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen["prompts"] = prompts
        return [["8+7=15. Answer: 85"] for _ in prompts], [[5] for _ in prompts]

    monkeypatch.setattr(rollouts_module, "generate", fake_generate)
    run_rollout(rollout_config(tiny_model_dir, tmp_path, base_model_mode=True, few_shot=0, num_samples=1,
                               dataset_split="train[:1]"))
    assert seen["prompts"] == ["Instruction: What is 58 + 27?\nResponse:"]


def test_jsonl_prompts_as_text_or_messages(tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "prompts.jsonl"
    write_jsonl(data, [{"prompt": "Say hi."}, {"prompt": [{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": "Say bye."}], "topic": "x"}])
    seen = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen["prompts"] = prompts
        n = kwargs["num_return_sequences"]
        return [["ok"] * n for _ in prompts], [[1] * n for _ in prompts]

    monkeypatch.setattr(rollouts_module, "generate", fake_generate)
    run_rollout(rollout_config(tiny_model_dir, tmp_path / "out", dataset_name=str(data), dataset_split="train"))
    assert seen["prompts"][1].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    rows = read_rows(tmp_path / "out")
    assert rows[1]["id"] == f"{data}:2" and rows[1]["fields"] == {"topic": "x"}


@pytest.mark.parametrize("base_model_mode", [False, True], ids=["chat", "base"])
def test_hh_rlhf_transcripts_are_prompted_through_their_last_assistant_turn(tiny_model_dir, tmp_path, monkeypatch,
                                                                             base_model_mode):
    seen = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen.update(prompts=prompts, stop=kwargs["stop_strings"])
        n = kwargs["num_return_sequences"]
        return [["ok"] * n for _ in prompts], [[1] * n for _ in prompts]

    monkeypatch.setattr(rollouts_module, "generate", fake_generate)
    hh = "examples/data/hh_rlhf_sample.jsonl"  # row 5: two human turns, the first answered
    run_rollout(rollout_config(tiny_model_dir, tmp_path, dataset_name=hh, dataset_split="train[4:5]", num_samples=1,
                               base_model_mode=base_model_mode))
    row = read_rows(tmp_path)[0]
    transcript = ("\n\nHuman: I want to learn to cook.\n\nAssistant: Great! What kind of food do you like?"
                  "\n\nHuman: Italian, mostly.\n\nAssistant:")
    if base_model_mode:  # the transcript itself, continued until the next human turn
        assert row["prompt"] == seen["prompts"][0] == transcript and "\n\nHuman:" in seen["stop"]
    else:
        assert row["prompt"] == [{"role": "user", "content": "I want to learn to cook."},
                                 {"role": "assistant", "content": "Great! What kind of food do you like?"},
                                 {"role": "user", "content": "Italian, mostly."}]
        assert seen["prompts"][0].endswith("<|im_start|>user\nItalian, mostly.<|im_end|>\n<|im_start|>assistant\n")
    assert set(row["fields"]) == {"chosen", "rejected"}


def test_rows_without_prompt_are_rejected(tiny_model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    write_jsonl(data, [{"prompt": "ok"}, {"question": "no prompt"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field 'prompt'"):
        run_rollout(rollout_config(tiny_model_dir, tmp_path / "out", dataset_name=str(data), dataset_split="train"))
    assert not (tmp_path / "out" / "rollouts.jsonl").exists()


@pytest.mark.gpu
def test_vllm_backend(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    run_rollout(rollout_config(tiny_model_dir, tmp_path, backend="vllm"))
    rows = read_rows(tmp_path)
    assert len(rows) == 6 and all(len(r["completions"]) == 3 for r in rows)
