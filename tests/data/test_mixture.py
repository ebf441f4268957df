"""dataset_mixture: entry checks, what a weight takes, the mixed rows of each command's format, and
one short `posttrain sft` run on a mixture."""

from __future__ import annotations

import json

import pytest

from posttrain.cli import main
from posttrain.commands.sdpo import SDPOJobConfig, prompt_dataset, reward_functions
from posttrain.commands.sft import SFTJobConfig
from posttrain.config import load_config
from posttrain.data.jsonl import write_jsonl
from posttrain.data.mixture import MixtureSource, check_dataset_keys, mixture_sources, weigh_rows
from posttrain.data.preference import normalize_pairs
from posttrain.errors import ConfigError, DataError
from posttrain.tasks.sources import load_mixture
from posttrain.trainers.rewards import TaskReward

HH = "examples/data/hh_rlhf_sample.jsonl"


def numbered(path, count, **fields):
    write_jsonl(path, [{"i": i, **fields} for i in range(count)])
    return str(path)


# -- entries ----------------------------------------------------------------------------------


def test_entries_default_to_the_train_split_and_weight_one():
    assert mixture_sources([{"name": "a.jsonl"}, {"name": "org/set", "split": "test[:10]", "weight": 2}]) == [
        MixtureSource("a.jsonl", "train", 1.0), MixtureSource("org/set", "test[:10]", 2.0)]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "a.jsonl", "wieght": 2}, "config key 'dataset_mixture[1]': unknown field 'wieght' (did you mean 'weight'?)"),
        ({"name": "a.jsonl", "rows": 2}, "config key 'dataset_mixture[1]': unknown field 'rows' (fields: name, split, weight, config, data_files, columns)"),
        ({"split": "train"}, "config key 'dataset_mixture[1].name': expected a .jsonl file, task:<name> or a hub dataset id, got None"),
        ({"name": "a.jsonl", "weight": 0}, "config key 'dataset_mixture[1].weight' must be a number > 0, got 0"),
        ({"name": "a.jsonl", "weight": -0.5}, "config key 'dataset_mixture[1].weight' must be a number > 0, got -0.5"),
        ({"name": "a.jsonl", "weight": True}, "config key 'dataset_mixture[1].weight' must be a number > 0, got True"),
        ({"name": "a.jsonl", "weight": float("inf")}, "config key 'dataset_mixture[1].weight' must be a number > 0, got inf"),
        ({"name": "a.jsonl", "split": "train[:5"}, "config key 'dataset_mixture[1].split': cannot read split 'train[:5' "
         "(expected e.g. train, train[:100], train[10%:20%])"),
        ("a.jsonl", "config key 'dataset_mixture[1]': expected a mapping with name, split, weight, config, data_files, columns, got 'a.jsonl'"),
    ],
)
def test_a_bad_entry_names_itself_and_its_field(entry, message):
    with pytest.raises(ConfigError) as info:
        mixture_sources([{"name": "ok.jsonl"}, entry])
    assert str(info.value) == message


def test_dataset_keys_a_mixture_replaces_the_default_dataset_and_excludes_the_single_keys():
    assert check_dataset_keys("", "train", [], "task:arithmetic") == "task:arithmetic"
    assert check_dataset_keys("", "train", [{"name": "a.jsonl"}], "task:arithmetic") == ""
    assert check_dataset_keys("b.jsonl", "train[:5]", [], "task:arithmetic") == "b.jsonl"
    with pytest.raises(ConfigError, match="'dataset_name' and 'dataset_mixture' exclude each other"):
        check_dataset_keys("b.jsonl", "train", [{"name": "a.jsonl"}])
    with pytest.raises(ConfigError, match="'dataset_train_split' does not apply to a 'dataset_mixture'"):
        check_dataset_keys("", "train[:5]", [{"name": "a.jsonl"}])
    with pytest.raises(ConfigError, match=r"config key 'dataset_train_split': cannot read split 'train\[x\]'"):
        check_dataset_keys("b.jsonl", "train[x]", [])


# -- weights ----------------------------------------------------------------------------------


def test_a_weight_takes_round_weight_times_rows():
    rows = list(range(10))
    assert weigh_rows(rows, 1.0, seed=0, index=0) == rows
    assert weigh_rows(rows, 2.0, seed=0, index=0) == rows + rows
    half = weigh_rows(rows, 0.5, seed=0, index=0)
    assert len(half) == 5 and half == sorted(set(half))  # a draw without replacement, in row order
    more = weigh_rows(rows, 2.54, seed=0, index=0)
    assert len(more) == 25 and more[:20] == rows + rows and len(set(more[20:])) == 5


def test_the_draw_is_seeded_per_source():
    rows = list(range(100))
    assert weigh_rows(rows, 0.3, seed=1, index=0) == weigh_rows(rows, 0.3, seed=1, index=0)
    assert weigh_rows(rows, 0.3, seed=1, index=0) != weigh_rows(rows, 0.3, seed=2, index=0)
    assert weigh_rows(rows, 0.3, seed=1, index=0) != weigh_rows(rows, 0.3, seed=1, index=1)


def test_load_mixture_weighs_each_source_and_keeps_locations(tmp_path):
    a, b = numbered(tmp_path / "a.jsonl", 3), numbered(tmp_path / "b.jsonl", 20)
    mixture = [{"name": a, "weight": 2}, {"name": b, "split": "train[:10]", "weight": 0.5},
               {"name": "task:arithmetic", "split": "train[:4]"}]
    rows = load_mixture(mixture, seed=7, task_options={"digits": 1, "test_size": 5})
    assert [where for where, _ in rows[:6]] == [f"{a}:1", f"{a}:2", f"{a}:3"] * 2
    from_b = [row["i"] for where, row in rows[6:11]]
    assert all(where.startswith(b) for where, _ in rows[6:11]) and len(set(from_b)) == 5 and max(from_b) < 10
    assert [where for where, _ in rows[11:]] == [f"task:arithmetic[{i}]" for i in range(4)]
    assert load_mixture(mixture, seed=7, task_options={"digits": 1, "test_size": 5}) == rows  # deterministic under the seed
    # another weight for the first source leaves the second source's draw as it was
    assert load_mixture([{**mixture[0], "weight": 1}, *mixture[1:]], seed=7, task_options={"digits": 1, "test_size": 5})[3:8] == rows[6:11]


def test_a_weight_that_selects_no_row_is_an_error(tmp_path):
    a = numbered(tmp_path / "a.jsonl", 3)
    with pytest.raises(DataError, match=r"dataset_mixture\[0\] .*a.jsonl: weight 0.1 of its 3 rows selects none"):
        load_mixture([{"name": a, "weight": 0.1}], seed=0)


# -- each command's format --------------------------------------------------------------------


def test_dpo_sources_of_different_formats_become_the_same_pairs(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}])
    rows = load_mixture([{"name": HH, "split": "train[:2]"}, {"name": str(pairs)}], seed=0, preference=True)
    normalized = normalize_pairs(rows)
    assert len(normalized) == 3 and all(set(p) == {"prompt", "chosen", "rejected"} for p in normalized)
    assert all(isinstance(p[key], list) for p in normalized for key in p)  # chat messages from both sources


def test_a_dpo_source_whose_rows_do_not_fit_names_the_source_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"prompt": "q", "chosen": "a"}])
    rows = load_mixture([{"name": HH, "split": "train[:2]"}, {"name": str(bad)}], seed=0, preference=True)
    with pytest.raises(DataError, match=r"bad.jsonl:1: missing field 'rejected'"):
        normalize_pairs(rows)


def test_sdpo_sources_need_the_same_columns(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": "What is 1 + 1?", "answer": 2, "a": 1, "b": 1}])
    rows = load_mixture([{"name": "task:arithmetic", "split": "train[:2]"}, {"name": str(prompts)}], seed=0)
    assert len(prompt_dataset(rows)) == 3
    write_jsonl(prompts, [{"prompt": "What is 1 + 1?", "answer": 2}])
    rows = load_mixture([{"name": "task:arithmetic", "split": "train[:2]"}, {"name": str(prompts)}], seed=0)
    with pytest.raises(DataError, match=r"prompts.jsonl:1: missing field 'a' that task:arithmetic\[0\] has"):
        prompt_dataset(rows)


def test_sdpo_default_reward_only_when_every_source_is_the_same_task(tmp_path):
    one_task = [{"name": "task:arithmetic", "split": "train[:4]"}, {"name": "task:arithmetic", "split": "train[9:10]"}]
    config = load_config(SDPOJobConfig, values={"dataset_mixture": one_task})
    assert config.dataset_name == "" and isinstance(reward_functions(config)[0].function, TaskReward)
    mixed = load_config(SDPOJobConfig, values={"dataset_mixture": [one_task[0], {"name": str(tmp_path / "p.jsonl")}]})
    with pytest.raises(ConfigError, match="'reward_functions' is empty"):
        reward_functions(mixed)


# -- the command line -------------------------------------------------------------------------


def test_sft_config_defaults_to_the_task_without_a_mixture():
    assert load_config(SFTJobConfig).dataset_name == "task:arithmetic"
    assert load_config(SFTJobConfig, overrides={"dataset_mixture": "[{name: a.jsonl}]"}).dataset_mixture == [{"name": "a.jsonl"}]


def test_sft_trains_on_a_mixture(tiny_model_dir, tmp_path, capsys):
    chat = tmp_path / "chat.jsonl"
    write_jsonl(chat, [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}])
    mixture = f"[{{name: {chat}, weight: 2}}, {{name: 'task:arithmetic', split: 'train[:6]', weight: 0.5}}]"
    out = tmp_path / "out"
    code = main(["sft", "--model_name_or_path", tiny_model_dir, "--output_dir", str(out), "--dataset_mixture", mixture,
                 "--max_steps", "1", "--per_device_train_batch_size", "5", "--save_strategy", "no"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(captured.out[captured.out.rindex("{\n") :])  # after the trainer's own log lines
    assert metrics["global_step"] == 1 and metrics["epoch"] == 1.0  # one batch of 5 = 2 + 3 mixed rows
    assert (out / "model.safetensors").exists()


def test_an_exported_model_card_names_every_source(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from posttrain.commands import export as export_module

    mixture = [{"name": "a.jsonl", "weight": 2}, {"name": "org/set", "split": "train[:100]"}]
    stage = SimpleNamespace(command="sft", name="sft", config=load_config(SFTJobConfig, values={"dataset_mixture": mixture}))
    monkeypatch.setattr(export_module, "_pipeline_records", lambda model_dir: (stage, []))
    card = export_module.model_card(tmp_path, "title", "AutoModelForCausalLM", merged=False)
    assert "- training data: `a.jsonl`, split `train`, weight 2; `org/set`, split `train[:100]`, weight 1\n" in card
