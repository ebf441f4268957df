"""The hub's dataset layouts, as local files: what posttrain reads from each, derived by hand
from the rows written. Every training command reads its dataset through
``posttrain.data.sources.read_rows`` and its pairs through ``normalize_pairs``."""

from __future__ import annotations

import json
import math

import pytest
from datasets import Dataset, DatasetDict

from posttrain.data.preference import normalize_pairs
from posttrain.data.sources import read_rows
from posttrain.errors import DataError

ROWS = [{"prompt": "What is 1+1?", "completion": "2"}, {"prompt": "What is 2+2?", "completion": "4"}]


LOCAL_KINDS = ["parquet", "csv", "json array", "jsonl", "save_to_disk Dataset", "save_to_disk DatasetDict (split test)"]


def write(kind: str, tmp_path, rows: list[dict] = ROWS) -> tuple[str, str]:
    """A local dataset of ``rows`` (string values) in the layout ``kind``: (dataset_name, split)."""
    data = Dataset.from_list(rows)
    if kind == "parquet":
        data.to_parquet(tmp_path / "d.parquet")
        return str(tmp_path / "d.parquet"), "train"
    if kind == "csv":
        data.to_csv(tmp_path / "d.csv", index=False)
        return str(tmp_path / "d.csv"), "train"
    if kind == "json array":
        (tmp_path / "d.json").write_text(json.dumps(rows))
        return str(tmp_path / "d.json"), "train"
    if kind == "jsonl":
        (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(tmp_path / "d.jsonl"), "train"
    if kind == "save_to_disk Dataset":
        data.save_to_disk(tmp_path / "saved")
        return str(tmp_path / "saved"), "train"
    other = Dataset.from_list([{key: "other" for key in rows[0]}])
    DatasetDict(train=other, test=data).save_to_disk(tmp_path / "dict")
    return str(tmp_path / "dict"), "test"


@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_local_files_in_every_format_read_the_same_rows(kind, tmp_path, cell):
    """A local file or save_to_disk directory: the rows as written (CSV cells stay text), each with a location."""
    cell("layouts", f"local {kind}", "read (every command)")
    name, split = write(kind, tmp_path)
    located = read_rows(name, split)
    assert [row for _, row in located] == ROWS
    assert all(where.startswith(name) for where, _ in located)
    assert [row for _, row in read_rows(name, split.replace("train", "train[:1]") if split == "train" else "test[:1]")] == ROWS[:1]


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: cannot read it as parquet"):
        read_rows(str(tmp_path / "bad.parquet"), "train")
    with pytest.raises(DataError, match=r"missing.csv: no such file"):
        read_rows(str(tmp_path / "missing.csv"), "train")
    DatasetDict(train=Dataset.from_list(ROWS)).save_to_disk(tmp_path / "dict")
    with pytest.raises(DataError, match=r"dict: no split 'valid' \(it has train\)"):
        read_rows(str(tmp_path / "dict"), "valid")


USER = {"role": "user", "content": "Hi?"}
GOOD, BAD = {"role": "assistant", "content": "Hello!"}, {"role": "assistant", "content": "Go away."}
EXPECTED = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
PAIR_LAYOUTS = {
    "implicit-prompt conversations (trl-lib/ultrafeedback_binarized)": {"chosen": [USER, GOOD], "rejected": [USER, BAD]},
    "prompt + whole conversations (HuggingFaceH4/ultrafeedback_binarized)": {"prompt": "Hi?", "chosen": [USER, GOOD], "rejected": [USER, BAD]},
    "conversational prompt/chosen/rejected": {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
    "string prompt, conversational responses": {"prompt": "Hi?", "chosen": [GOOD], "rejected": [BAD]},
}


@pytest.mark.parametrize("layout", list(PAIR_LAYOUTS))
def test_pair_layouts_give_the_prompt_once_and_the_responses(layout, cell):
    """Preference pairs: the prompt once, the two responses alone, whatever layout they came in."""
    cell("layouts", layout, "dpo, kto, rm pairs")
    assert normalize_pairs([("d.jsonl:1", PAIR_LAYOUTS[layout])]) == [EXPECTED]


def test_whole_conversations_that_do_not_start_with_the_prompt_are_refused():
    with pytest.raises(DataError, match="d.jsonl:3: field 'chosen' starts with messages that are not the 'prompt'"):
        normalize_pairs([("d.jsonl:3", {"prompt": "Other?", "chosen": [USER, GOOD], "rejected": [USER, BAD]})])
    with pytest.raises(DataError, match="d.jsonl:4: 'chosen' and 'rejected' share no leading messages"):
        normalize_pairs([("d.jsonl:4", {"chosen": [GOOD], "rejected": [BAD]})])


def test_a_pairs_tools_column_goes_to_the_trainer_as_json():
    """TRL's preference trainers render a row's tools with its prompt; posttrain keeps them (as JSON
    text, so rows with different schemas share one column) and drops nothing."""
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
    (pair,) = normalize_pairs([("d.jsonl:1", {**PAIR_LAYOUTS["conversational prompt/chosen/rejected"], "tools": [tool]})])
    assert json.loads(pair.pop("tools")) == [tool] and pair == EXPECTED
    with pytest.raises(DataError, match="d.jsonl:2: field 'tools' must be a list of function schemas"):
        normalize_pairs([("d.jsonl:2", {**EXPECTED, "tools": {"name": "lookup"}})])


# -- every layout through every training command it fits ------------------------------------------
#
# One optimizer step of each command on the micro model, built as the CLI builds it. What the
# trainer was handed is checked against the rows written, rendered by the tokenizer's own chat
# template: the prompt once, each response alone (DPO, KTO), whole conversations (RM), each reply
# and its end-of-turn token (SFT), the question as the prompt and the gold answer as the
# reference (SDPO, GRPO).

def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


QUESTIONS = [(f"What is {i} + {i}?", 2 * i) for i in range(1, 5)]
SYSTEM = {"role": "system", "content": "Answer with a number."}
COMMAND_ROWS = {
    # layout -> (rows, the commands it feeds, extra config for them)
    "prompt/completion": ([{"prompt": q, "completion": str(a)} for q, a in QUESTIONS], ["sft"], {}),
    "messages": ([{"messages": [SYSTEM, user(q), assistant(str(a))]} for q, a in QUESTIONS], ["sft"], {}),
    "conversational prompt/completion": (
        [{"prompt": [SYSTEM, user(q)], "completion": [assistant(str(a))]} for q, a in QUESTIONS], ["sft"], {}),
    "prompt/chosen/rejected": (
        [{"prompt": q, "chosen": str(a), "rejected": f"{a + 1} or so"} for q, a in QUESTIONS], ["dpo", "kto", "rm"], {}),
    "conversational prompt/chosen/rejected": (
        [{"prompt": [SYSTEM, user(q)], "chosen": [assistant(str(a))], "rejected": [assistant(f"{a + 1} or so")]}
         for q, a in QUESTIONS], ["dpo", "kto", "rm"], {}),
    "string prompt, conversational responses": (
        [{"prompt": q, "chosen": [assistant(str(a))], "rejected": [assistant(f"{a + 1} or so")]} for q, a in QUESTIONS],
        ["dpo", "kto", "rm"], {}),
    "implicit-prompt conversations (trl-lib/ultrafeedback_binarized)": (
        [{"chosen": [user(q), assistant(str(a))], "rejected": [user(q), assistant(f"{a + 1} or so")]} for q, a in QUESTIONS],
        ["dpo", "kto", "rm"], {}),
    "prompt + whole conversations (HuggingFaceH4/ultrafeedback_binarized)": (
        [{"prompt": q, "chosen": [user(q), assistant(str(a))], "rejected": [user(q), assistant(f"{a + 1} or so")]}
         for q, a in QUESTIONS], ["dpo", "kto", "rm"], {}),
    "unpaired prompt/completion/label (KTO)": (
        [{"prompt": q, "completion": str(a + (i % 2)), "label": i % 2 == 0} for i, (q, a) in enumerate(QUESTIONS)], ["kto"], {}),
    "question/answer (dataset_columns)": (
        [{"question": q, "answer": str(a)} for q, a in QUESTIONS], ["sft", "sdpo", "grpo"],
        {"sft": {"dataset_columns": {"prompt": "question", "completion": "answer"}},
         "rl": {"dataset_columns": {"prompt": "question", "reference": "answer"}, "reward_functions": ["numeric"]}}),
    "openai/gsm8k (question, answer ending in #### N)": (
        [{"question": q, "answer": f"{a // 2} + {a // 2} = <<{a // 2}+{a // 2}={a}>>{a}\n#### {a}"} for q, a in QUESTIONS],
        ["sft", "sdpo", "grpo"],
        {"sft": {"dataset_columns": {"prompt": "question", "completion": "answer"}},
         "rl": {"dataset_columns": {"prompt": "question", "reference": "answer"}, "reward_functions": ["numeric"]}}),
}
BUILDERS = {
    "sft": ("posttrain.commands.sft", "SFTJobConfig", "build_sft_trainer"),
    "dpo": ("posttrain.commands.dpo", "DPOJobConfig", "build_dpo_trainer"),
    "kto": ("posttrain.commands.kto", "KTOJobConfig", "build_kto_trainer"),
    "rm": ("posttrain.commands.rm", "RMJobConfig", "build_rm_trainer"),
    "sdpo": ("posttrain.commands.sdpo", "SDPOJobConfig", "build_sdpo_trainer"),
    "grpo": ("posttrain.commands.sdpo", "GRPOJobConfig", "build_sdpo_trainer"),
}
RL = {"num_generations": 2, "max_completion_length": 4}


def build(command: str, model_dir: str, dataset_name: str, out, **values):
    """The trainer ``posttrain <command>`` builds, for one step over all the rows in one batch."""
    import importlib

    from posttrain.config import load_config

    module, config_class, builder = BUILDERS[command]
    module = importlib.import_module(module)
    config = load_config(getattr(module, config_class), values={
        "model_name_or_path": model_dir, "dataset_name": dataset_name, "output_dir": str(out), "max_steps": 1,
        "per_device_train_batch_size": 4, "save_strategy": "no", "logging_steps": 1, "learning_rate": 0.01,
        **(RL if command in ("sdpo", "grpo") else {}), **values})
    return getattr(module, builder)(config)


def rendered(tokenizer, messages, generation_prompt=False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def as_messages(value, role):
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def expected_pair(tokenizer, row) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) text of a pair row, derived from the rendered conversations: the
    prompt is the messages the two sides share (or the row's prompt), each response what its
    whole conversation adds to the prompt."""
    chosen, rejected = as_messages(row["chosen"], "assistant"), as_messages(row["rejected"], "assistant")
    if "prompt" in row:
        prompt = as_messages(row["prompt"], "user")
        if chosen[: len(prompt)] == prompt:  # whole conversations that repeat the prompt
            chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
    else:
        prompt, chosen, rejected = chosen[:-1], chosen[-1:], rejected[-1:]
    prompt_text = rendered(tokenizer, prompt, generation_prompt=True)
    return (prompt_text, rendered(tokenizer, prompt + chosen)[len(prompt_text):],
            rendered(tokenizer, prompt + rejected)[len(prompt_text):])


def check_trainer_input(command, trainer, rows, sft_trained_texts):
    """What the trainer was handed is what the rows say (see the section comment)."""
    tokenizer = trainer.processing_class
    decode = tokenizer.decode
    data = trainer.train_dataset
    if command == "sft":
        replies = []
        for row in rows:
            if "messages" in row:
                replies.append("".join(m["content"] for m in row["messages"] if m["role"] == "assistant"))
            else:
                completion = row.get("completion", row.get("answer"))
                replies.append(completion if isinstance(completion, str) else completion[0]["content"])
        assert sft_trained_texts(trainer) == sorted(reply + "<|im_end|>" for reply in replies)
    elif command in ("dpo", "rm"):
        for got, row in zip(data, rows):
            prompt, chosen, rejected = expected_pair(tokenizer, row)
            if command == "dpo":
                assert (decode(got["prompt_ids"]), decode(got["chosen_ids"]), decode(got["rejected_ids"])) == (prompt, chosen, rejected)
            else:
                assert (decode(got["chosen_ids"]), decode(got["rejected_ids"])) == (prompt + chosen, prompt + rejected)
    elif command == "kto":
        if "label" in rows[0]:
            expected = [(rendered(tokenizer, [user(r["prompt"])], True), r["completion"] + "<|im_end|>\n", r["label"]) for r in rows]
        else:
            expected = []
            for row in rows:
                prompt, chosen, rejected = expected_pair(tokenizer, row)
                expected += [(prompt, chosen, True), (prompt, rejected, False)]
        got = [(decode(r["prompt_ids"]), decode(r["completion_ids"]), r["label"]) for r in data]
        assert sorted(got) == sorted(expected)
    else:  # sdpo, grpo: the question as a user turn, the gold answer as the reference
        assert [r["prompt"] for r in data] == [[user(row["question"])] for row in rows]
        assert list(data["reference"]) == [row["answer"] for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("layout, command", [(layout, command) for layout, (_, commands, _) in COMMAND_ROWS.items()
                                             for command in commands])
def test_each_layout_trains_with_each_command_it_fits(layout, command, micro_model_dir, tmp_path, cell, sft_trained_texts):
    cell("layouts", layout, command)
    rows, _, extra = COMMAND_ROWS[layout]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    values = extra.get("rl" if command in ("sdpo", "grpo") else command, {})
    trainer = build(command, micro_model_dir, str(path), tmp_path / "out", **values)
    check_trainer_input(command, trainer, rows, sft_trained_texts)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 1 and losses and all(map(math.isfinite, losses))
    if command in ("sdpo", "grpo"):  # the numeric reward read the gold answers: a number in [0, 1]
        rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
        assert rewards and all(0.0 <= r <= 1.0 for r in rewards)


FORMAT_ROWS = {  # command -> string-valued rows (a CSV holds text) and the config that reads them
    "sft": ("prompt/completion", {}),
    "dpo": ("prompt/chosen/rejected", {}),
    "kto": ("prompt/chosen/rejected", {}),
    "rm": ("prompt/chosen/rejected", {}),
    "sdpo": ("question/answer (dataset_columns)", "rl"),
    "grpo": ("question/answer (dataset_columns)", "rl"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", LOCAL_KINDS)
@pytest.mark.parametrize("command", list(FORMAT_ROWS))
def test_each_local_format_trains_with_each_command(kind, command, micro_model_dir, tmp_path, cell, sft_trained_texts):
    cell("layouts", f"local {kind}", command)
    layout, extra_key = FORMAT_ROWS[command]
    rows, _, extra = COMMAND_ROWS[layout]
    name, split = write(kind, tmp_path, rows)
    values = {**extra.get(extra_key or command, {}), "dataset_train_split": split}
    trainer = build(command, micro_model_dir, name, tmp_path / "out", **values)
    check_trainer_input(command, trainer, rows, sft_trained_texts)
    trainer.train()
    assert trainer.state.global_step == 1


GSM8K = COMMAND_ROWS["openai/gsm8k (question, answer ending in #### N)"][0]


@pytest.mark.slow
def test_eval_scores_gsm8k_answers_by_the_number_after_the_hashes(micro_model_dir, tmp_path, monkeypatch, capsys, cell):
    """eval on gsm8k's columns: the question is the prompt, the answer's "#### N" the number the
    completion's last number must equal (the solution's earlier numbers do not count)."""
    import posttrain.commands.eval as eval_command
    from posttrain.cli import main

    cell("layouts", "openai/gsm8k (question, answer ending in #### N)", "eval")
    golds = [int(row["answer"].rsplit("#### ", 1)[1]) for row in GSM8K]
    replies = [f"so it is {gold}" if i % 2 == 0 else f"{gold // 2} twice" for i, gold in enumerate(golds)]

    def scripted(model, tokenizer, prompts, return_token_counts=False, **kwargs):  # the model "writes" replies
        assert len(prompts) == len(replies)
        texts = [[reply] for reply in replies]
        return (texts, [[4] for _ in replies]) if return_token_counts else texts

    monkeypatch.setattr(eval_command, "generate", scripted)
    name, _ = write("parquet", tmp_path, GSM8K)
    out = tmp_path / "eval"
    code = main(["eval", "--model_name_or_path", micro_model_dir, "--data_file", name, "--prompt_field", "question",
                 "--reference_field", "answer", "--scorer", "numeric", "--output_dir", str(out)])
    assert code == 0, capsys.readouterr().err
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["prompt"] for p in predictions] == [row["question"] for row in GSM8K]
    assert [p["score"] for p in predictions] == [1.0 if i % 2 == 0 else 0.0 for i in range(len(GSM8K))]


@pytest.mark.slow
def test_rollout_reads_mapped_columns_and_keeps_the_rest(micro_model_dir, tmp_path, capsys, cell):
    from posttrain.cli import main

    cell("layouts", "question/answer (dataset_columns)", "rollout")
    name, _ = write("csv", tmp_path, GSM8K)
    out = tmp_path / "rollouts"
    code = main(["rollout", "--model_name_or_path", micro_model_dir, "--dataset_name", name, "--dataset_split", "train",
                 "--dataset_columns", "{prompt: question}", "--num_samples", "2", "--max_new_tokens", "4", "--output_dir", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["fields"], len(r["completions"])) for r in rows] == [
        (row["question"], {"answer": row["answer"]}, 2) for row in GSM8K]


def test_mapped_columns_are_renamed_and_a_missing_one_names_the_row(tmp_path):
    from posttrain.tasks.sources import load_rows

    name, split = write("csv", tmp_path, GSM8K)
    rows = load_rows(name, split, columns={"prompt": "question", "reference": "answer"})
    assert [row for _, row in rows] == [{"prompt": r["question"], "reference": r["answer"]} for r in GSM8K]
    with pytest.raises(DataError, match=r"d.csv:2: no column 'problem' \(dataset_columns maps prompt to it\); "
                                        r"the row's columns are question, answer"):
        load_rows(name, split, columns={"prompt": "problem"})
    (tmp_path / "both.jsonl").write_text(json.dumps({"prompt": "a", "question": "b"}) + "\n")
    with pytest.raises(DataError, match=r"both.jsonl:1: has both 'prompt' and 'question', which dataset_columns maps to prompt"):
        load_rows(str(tmp_path / "both.jsonl"), "train", columns={"prompt": "question"})


@pytest.mark.parametrize("value, message", [
    ("{prompt: [question]}", "expected a mapping of field names to column names"),
    ("{prompt: q, completion: q}", "column 'q' is mapped to more than one field"),
])
def test_bad_dataset_columns_are_config_errors(value, message, capsys):
    from posttrain.cli import main

    assert main(["sft", "--dataset_name", "x.jsonl", "--dataset_columns", value]) == 2
    assert message in capsys.readouterr().err


def test_a_mixture_entry_maps_its_own_columns(tmp_path):
    from posttrain.tasks.sources import load_mixture

    name, _ = write("jsonl", tmp_path, GSM8K)
    (tmp_path / "plain.jsonl").write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    mixed = load_mixture([{"name": name, "columns": {"prompt": "question", "completion": "answer"}},
                          {"name": str(tmp_path / "plain.jsonl")}], seed=0)
    assert [sorted(row) for _, row in mixed] == [["completion", "prompt"]] * (len(GSM8K) + 1)
