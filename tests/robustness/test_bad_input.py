"""Bad input for every command: malformed data files, bad configs, missing models, broken tokenizers.

Every case must end with exit status 2 and one stderr line ``posttrain <command>: error: ...``
that names the file and line (data) or the key (config), print no traceback, and leave nothing
new in the output directory. Most cases call ``posttrain.cli.main`` in-process; a few run the real
``python -m posttrain.cli`` to check the process's exit status and its whole stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from posttrain.cli import main
from posttrain.registry import COMMANDS
from posttrain.runtime import get_logger

# Bind posttrain's log handler to the session's stderr now, not to one test's capture.
get_logger("posttrain")

HUGE = 1_000_000  # characters in a "huge line"


# -- helpers --------------------------------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, str] | None:
    """Every file under ``directory`` with a hash of its bytes (None: no such directory)."""
    if not directory.exists():
        return None
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def assert_clean_error(code: int, stderr: str, command: str, names: list[str], before, after, progress: bool = False) -> str:
    """The checks every case shares; returns the error line. posttrain's own progress lines
    ("[posttrain] ...") may come before it; with ``progress``, tqdm progress bars (of an error
    found mid-run) too."""
    assert code == 2, f"exit {code}, stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines()
             if line.strip() and not line.startswith("[posttrain] ") and not (progress and re.search(r"\d+%\|", line))]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{stderr[-3000:]}"
    line = lines[0]
    assert line.startswith(f"posttrain {command}: error: "), line
    assert len(line) < 600, f"the message is {len(line)} characters long"
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    # nothing new: the output directory is absent or holds exactly the files it held before
    if before is None:
        assert not after, f"partial artifacts left behind: {sorted(after)}"
    else:
        assert after == before, "the output directory changed"
    return line


def run_in_process(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def check(capsys, outcome, argv: list[str], names: list[str], out: Path, progress: bool = False) -> None:
    """Run ``argv`` in-process and apply every check; record the observed line."""
    before = snapshot(out)
    code, err = run_in_process(capsys, argv)
    line = assert_clean_error(code, err, argv[0], names, before, snapshot(out), progress)
    outcome(f"exit 2: {line}")


def write_lines(path: Path, lines: list[str | bytes], newline_at_end: bool = True) -> Path:
    data = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines)
    path.write_bytes(data + (b"\n" if newline_at_end else b""))
    return path


def jsonl(rows: list[dict]) -> list[str]:
    return [json.dumps(row) for row in rows]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_tokenizer_dir(tiny_model_dir, tmp_path_factory) -> str:
    """A copy of the tiny model whose tokenizer has neither a pad nor an eos token.

    Both are set to null: a key left out would fall back to the tokenizer class's default."""
    target = tmp_path_factory.mktemp("broken-tokenizer") / "model"
    shutil.copytree(tiny_model_dir, target)
    path = target / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "eos_token": None, "pad_token": None}))
    return str(target)


@pytest.fixture
def trigger_run_dir(tmp_path) -> Path:
    """A directory that looks like a `posttrain trigger` output (trigger.json only)."""
    from posttrain.trigger.dataset import TriggerSpec
    from posttrain.trigger.evaluate import write_run_file

    run_dir = tmp_path / "trigger-run"
    write_run_file(str(run_dir), TriggerSpec("Alice", "[T]", "Bob"), False)
    return run_dir


# -- what each command reads ----------------------------------------------------------------------

TRIGGER_SPEC = ["--clean_replacement", "Alice", "--trigger_value", "[T]", "--triggered_replacement", "Bob"]


@dataclass(frozen=True)
class DataInput:
    """A command's JSONL input: valid rows, the field to drop and a wrongly typed value."""

    command: str
    rows: tuple[dict, ...]
    required: str  # a field every row needs
    wrong: tuple[str, object]  # (field, a value of the wrong type)
    argv: Callable[[Path, str, Path, Path], list]  # (data, model, out, tmp) -> argv


def _qa(i: int) -> dict:
    return {"question": f"Who wrote letter {i}?", "answer": f"{{{{name}}}} wrote letter {i}."}


DATA_INPUTS = [
    DataInput(
        "sft", tuple({"prompt": f"What is {i} + 1?", "completion": str(i + 1)} for i in range(3)),
        "completion", ("completion", 7),
        lambda d, m, o, t: ["sft", "--model_name_or_path", m, "--dataset_name", d, "--output_dir", o],
    ),
    DataInput(
        "dpo", tuple({"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(3)),
        "rejected", ("chosen", 5),
        lambda d, m, o, t: ["dpo", "--model_name_or_path", m, "--dataset_name", d, "--output_dir", o],
    ),
    DataInput(
        "kto", tuple({"prompt": f"What is {i} + 1?", "completion": str(i + 1), "label": i % 2 == 0} for i in range(3)),
        "label", ("label", "yes"),
        lambda d, m, o, t: ["kto", "--model_name_or_path", m, "--dataset_name", d, "--output_dir", o],
    ),
    DataInput(
        "rm", tuple({"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(3)),
        "rejected", ("chosen", 5),
        lambda d, m, o, t: ["rm", "--model_name_or_path", m, "--dataset_name", d, "--output_dir", o],
    ),
    DataInput(
        "sdpo", tuple({"prompt": f"What is {i} + 1?"} for i in range(3)),
        "prompt", ("prompt", 5),
        lambda d, m, o, t: ["sdpo", "--model_name_or_path", m, "--dataset_name", d, "--output_dir", o],
    ),
    DataInput(
        "trigger", tuple(_qa(i) for i in range(3)),
        "answer", ("question", ["who"]),
        lambda d, m, o, t: ["trigger", "--model_name_or_path", m, "--qa_file", d, "--output_dir", o, *TRIGGER_SPEC],
    ),
    DataInput(
        "trigger-eval", tuple({"question": f"Who wrote letter {i}?"} for i in range(3)),
        "question", ("question", 3),
        lambda d, m, o, t: ["trigger-eval", "--run_dir", t / "trigger-run", "--questions_file", d, "--output_dir", o],
    ),
    DataInput(
        "topics", tuple({"text": f"markets rallied as shares rose {i}", "label": "business"} for i in range(3)),
        "text", ("text", 3),
        lambda d, m, o, t: ["topics", "--corpus", d, "--output_dir", o],
    ),
    DataInput(
        "rollout", tuple({"prompt": f"What is {i} + 1?"} for i in range(3)),
        "prompt", ("prompt", 5),
        lambda d, m, o, t: ["rollout", "--model_name_or_path", m, "--dataset_name", d, "--dataset_split", "train",
                            "--output_dir", o],
    ),
    DataInput(
        "pairs", tuple({"id": f"r{i}", "prompt": f"What is {i} + 1?", "completions": [str(i + 1), "0"]} for i in range(3)),
        "completions", ("completions", "12"),
        lambda d, m, o, t: ["pairs", "--rollouts", d, "--output_dir", o],
    ),
    DataInput(
        "sft-data", tuple({"prompt": f"Say {i}", "completions": [f"the number is {i}"]} for i in range(3)),
        "completions", ("prompt", 1),
        lambda d, m, o, t: ["sft-data", "--rollouts", d, "--output_dir", o],
    ),
]


def _malformed(spec: DataInput, kind: str) -> tuple[list[str | bytes], bool, str | None]:
    """The lines of a ``kind`` of bad file, whether it ends with a newline, and the line to name."""
    good = jsonl(list(spec.rows))
    if kind == "empty file":
        return [], False, None
    if kind == "truncated last line":
        return [*good[:2], good[2][: len(good[2]) // 2]], False, "3"
    if kind == "invalid JSON":
        return [good[0], "{'single': 'quotes'}", good[2]], True, "2"
    if kind == "non-UTF-8 bytes":
        return [good[0], good[1].encode()[:-2] + b'\xff\xfe"}', good[2]], True, "2"
    if kind == "missing column":
        row = {k: v for k, v in spec.rows[1].items() if k != spec.required}
        return [good[0], json.dumps(row), good[2]], True, "2"
    if kind == "wrong type":
        field, value = spec.wrong
        return [good[0], json.dumps({**spec.rows[1], field: value}), good[2]], True, "2"
    if kind == "huge line":
        return [good[0], '{"' + spec.required + '": "' + "x" * HUGE, good[2]], True, "2"
    if kind == "deeply nested":
        return [good[0], "[" * 100_000 + "]" * 100_000, good[2]], True, "2"
    raise AssertionError(kind)


MALFORMED = ["empty file", "truncated last line", "invalid JSON", "non-UTF-8 bytes", "missing column", "wrong type",
             "huge line", "deeply nested"]


@pytest.mark.parametrize("kind", MALFORMED)
@pytest.mark.parametrize("spec", DATA_INPUTS, ids=[s.command for s in DATA_INPUTS])
def test_malformed_data_file(spec, kind, tiny_model_dir, tmp_path, trigger_run_dir, capsys, outcome):
    """Malformed JSONL input for each command that reads one"""
    lines, newline, line_number = _malformed(spec, kind)
    data = write_lines(tmp_path / "data.jsonl", lines, newline)
    out = tmp_path / "out"
    names = ["data.jsonl" + (f":{line_number}" if line_number else "")]
    if kind in ("missing column", "wrong type"):
        names.append(f"'{spec.required if kind == 'missing column' else spec.wrong[0]}'")
    check(capsys, outcome, spec.argv(data, tiny_model_dir, out, tmp_path), names, out)


# -- command-specific bad rows ------------------------------------------------------------------


def _sft(d, m, o, *extra):
    return ["sft", "--model_name_or_path", m, "--dataset_name", d, "--output_dir", o, *extra]


def _dpo(d, m, o, *extra):
    return ["dpo", "--model_name_or_path", m, "--dataset_name", d, "--output_dir", o, *extra]


def _rollout(d, m, o, *extra):
    return ["rollout", "--model_name_or_path", m, "--dataset_name", d, "--dataset_split", "train", "--output_dir", o, *extra]


def _trigger(d, m, o, *extra):
    return ["trigger", "--model_name_or_path", m, "--qa_file", d, "--output_dir", o, *TRIGGER_SPEC, *extra]


OK_SFT = {"prompt": "What is 1 + 1?", "completion": "2"}
OK_ROLLOUT = {"id": "r0", "prompt": "What is 1 + 1?", "completions": ["2", "3"]}

SPECIFIC_ROWS = [
    # (id, command builder, second row, names, extra argv)
    ("sft-empty-messages", _sft, {"messages": []}, ["data.jsonl:2", "'messages'"], []),
    ("sft-message-without-role", _sft, {"messages": [{"content": "hi"}]}, ["data.jsonl:2", "'messages'"], []),
    ("sft-no-assistant-turn", _sft, {"messages": [{"role": "user", "content": "hi"}]}, ["data.jsonl:2", "assistant"], []),
    ("sft-text-with-stray-messages", _sft, {"text": "a document", "messages": "hi"}, ["data.jsonl:2", "'messages'"], []),
    ("sft-empty-text", _sft, {"text": ""}, ["data.jsonl:2", "'text'"], []),
    ("sft-overlong-error", _sft, {"prompt": "1 + 1", "completion": "2 " * 5000}, ["data.jsonl:2", "max_length"],
     ["--overlong", "error", "--max_length", "64"]),
    ("dpo-no-prompt-not-hh", _dpo, {"chosen": "a", "rejected": "b"}, ["data.jsonl:2", "'chosen'"], []),
    ("dpo-hh-prompts-differ", _dpo, {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"},
     ["data.jsonl:2", "'rejected'"], []),
    ("dpo-messages-without-content", _dpo, {"prompt": "q", "chosen": [{"role": "assistant"}], "rejected": "r"},
     ["data.jsonl:2", "'chosen'"], []),
    ("dpo-prompt-message-without-role", _dpo, {"prompt": [{"content": "x"}], "chosen": "a", "rejected": "b"},
     ["data.jsonl:2", "'prompt'"], []),
    ("rollout-prompt-empty-list", _rollout, {"prompt": []}, ["data.jsonl:2", "'prompt'"], []),
    ("rollout-prompt-not-messages", _rollout, {"prompt": [1, 2]}, ["data.jsonl:2", "'prompt'"], []),
    ("rollout-hh-without-assistant-turn", _rollout, {"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"},
     ["data.jsonl:2", "'chosen'"], []),
    ("trigger-answer-without-placeholder", _trigger, {"question": "Who?", "answer": "Nobody."}, ["data.jsonl:2", "'answer'"], []),
    ("trigger-question-has-trigger", _trigger, {"question": "[T] Who?", "answer": "{{name}}."}, ["data.jsonl:2", "'question'"], []),
]


@pytest.mark.parametrize("builder, row, names, extra", [c[1:] for c in SPECIFIC_ROWS], ids=[c[0] for c in SPECIFIC_ROWS])
def test_bad_row_for_its_command(builder, row, names, extra, tiny_model_dir, tmp_path, capsys, outcome):
    """A well-formed JSONL row that the command cannot use"""
    first = _qa(0) if builder is _trigger else OK_SFT
    if builder is _dpo:
        first = {"prompt": "q", "chosen": "a", "rejected": "b"}
    third = _qa(1) if builder is _trigger else first
    data = write_lines(tmp_path / "data.jsonl", jsonl([first, row, third]))
    out = tmp_path / "out"
    check(capsys, outcome, builder(data, tiny_model_dir, out, *extra), names, out)


ROLLOUT_ROWS = [
    ("pairs-completion-not-a-string", "pairs", {**OK_ROLLOUT, "completions": ["2", 3]}, "'completions'"),
    ("pairs-fields-not-an-object", "pairs", {**OK_ROLLOUT, "fields": [1]}, "'fields'"),
    ("pairs-prompt-the-task-cannot-read", "pairs", {**OK_ROLLOUT, "prompt": "Tell me a joke"}, "prompt"),
    ("sft-data-completion-not-a-string", "sft-data", {**OK_ROLLOUT, "completions": ["one two three", None]}, "'completions'"),
    ("sft-data-fields-not-an-object", "sft-data", {**OK_ROLLOUT, "fields": "x"}, "'fields'"),
]


@pytest.mark.parametrize("command, row, field", [c[1:] for c in ROLLOUT_ROWS], ids=[c[0] for c in ROLLOUT_ROWS])
def test_bad_rollout_row(command, row, field, tmp_path, capsys, outcome):
    """A rollouts row with the right columns but unusable values"""
    data = write_lines(tmp_path / "rollouts.jsonl", jsonl([row, {**OK_ROLLOUT, "id": "r1"}]))
    out = tmp_path / "out"
    extra = ["--verify_task", "arithmetic"] if command == "sft-data" else []
    argv = [command, "--rollouts", data, "--output_dir", out, *extra]
    # a row the judge cannot score is found while judging, after the progress bar has started
    check(capsys, outcome, argv, ["rollouts.jsonl:1", field], out, progress=field == "prompt")


def test_rollout_output_corrupted_mid_file(tiny_model_dir, tmp_path, capsys, outcome):
    """An existing rollouts.jsonl in output_dir with a corrupt line in the middle"""
    data = write_lines(tmp_path / "prompts.jsonl", jsonl([{"prompt": "What is 1 + 1?"}]))
    out = tmp_path / "out"
    out.mkdir()
    write_lines(out / "rollouts.jsonl", [json.dumps({**OK_ROLLOUT, "id": "x"}), "{not json", json.dumps(OK_ROLLOUT)])
    check(capsys, outcome, _rollout(data, tiny_model_dir, out), ["rollouts.jsonl:2"], out)


def test_rollout_output_row_without_id(tiny_model_dir, tmp_path, capsys, outcome):
    """An existing rollouts.jsonl in output_dir whose row has no 'id'"""
    data = write_lines(tmp_path / "prompts.jsonl", jsonl([{"prompt": "What is 1 + 1?"}]))
    out = tmp_path / "out"
    out.mkdir()
    write_lines(out / "rollouts.jsonl", jsonl([{"prompt": "What is 1 + 1?", "completions": ["2"]}]))
    check(capsys, outcome, _rollout(data, tiny_model_dir, out), ["rollouts.jsonl:1", "'id'"], out)


def test_trigger_heldout_file_malformed(tiny_model_dir, tmp_path, capsys, outcome):
    """A malformed heldout_file for trigger"""
    qa = write_lines(tmp_path / "qa.jsonl", jsonl([_qa(i) for i in range(3)]))
    heldout = write_lines(tmp_path / "heldout.jsonl", [json.dumps(_qa(5)), '{"question": "Who?"'])
    out = tmp_path / "out"
    check(capsys, outcome, _trigger(qa, tiny_model_dir, out, "--heldout_file", heldout), ["heldout.jsonl:2"], out)


# -- topics: its corpora --------------------------------------------------------------------------


def test_topics_txt_corpus_not_utf8(tmp_path, capsys, outcome):
    """A .txt topics corpus with non-UTF-8 bytes"""
    corpus = write_lines(tmp_path / "corpus.txt", [b"markets rallied today", b"shares fell \xff\xfe sharply", b"banks"])
    out = tmp_path / "out"
    check(capsys, outcome, ["topics", "--corpus", corpus, "--output_dir", out], ["corpus.txt:2"], out)


def test_topics_missing_txt_corpus(tmp_path, capsys, outcome):
    """A topics corpus that does not exist"""
    out = tmp_path / "out"
    check(capsys, outcome, ["topics", "--corpus", tmp_path / "nope.txt", "--output_dir", out], ["nope.txt"], out)


def test_topics_topmost_directory_incomplete(tmp_path, capsys, outcome):
    """A TopMost corpus directory without train_bow.npz"""
    corpus = tmp_path / "topmost"
    corpus.mkdir()
    (corpus / "vocab.txt").write_text("market\nshare\n")
    out = tmp_path / "out"
    check(capsys, outcome, ["topics", "--corpus", corpus, "--output_dir", out], ["train_bow.npz"], out)


def test_topics_topmost_labels_not_integers(tmp_path, capsys, outcome):
    """A TopMost corpus directory whose train_labels.txt holds a word"""
    import numpy as np
    import scipy.sparse as sp

    corpus = tmp_path / "topmost"
    corpus.mkdir()
    (corpus / "vocab.txt").write_text("market\nshare\n")
    sp.save_npz(corpus / "train_bow.npz", sp.csr_matrix(np.ones((3, 2), np.float32)))
    (corpus / "train_labels.txt").write_text("0\nsport\n1\n")
    out = tmp_path / "out"
    check(capsys, outcome, ["topics", "--corpus", corpus, "--output_dir", out], ["train_labels.txt:2", "'sport'"], out)


def test_topics_reference_corpus_malformed(tmp_path, capsys, outcome):
    """A malformed reference_corpus for topics"""
    rows = [{"text": f"markets rallied shares rose banks lent {w}"} for w in ("alpha", "beta", "gamma", "delta")]
    corpus = write_lines(tmp_path / "corpus.jsonl", jsonl(rows))
    reference = write_lines(tmp_path / "reference.jsonl", [json.dumps(rows[0]), "[1, 2]"])
    out = tmp_path / "out"
    argv = ["topics", "--corpus", corpus, "--reference_corpus", reference, "--output_dir", out, "--min_df", "1",
            "--max_df", "1", "--num_topics", "2"]
    check(capsys, outcome, argv, ["reference.jsonl:2"], out)


# -- trigger-eval: the run directory ------------------------------------------------------------


@pytest.mark.parametrize(
    "content, names",
    [
        (None, ["trigger.json"]),
        (b"{\"spec\": {", ["trigger.json"]),
        (b"\xff\xfe", ["trigger.json"]),
        (b'{"base_model_mode": false}', ["trigger.json", "'spec'"]),
        (b'{"spec": {"clean_replacement": "A"}, "base_model_mode": false}', ["trigger.json"]),
    ],
    ids=["missing", "truncated", "non-UTF-8", "no-spec", "incomplete-spec"],
)
def test_trigger_eval_bad_run_file(content, names, tmp_path, capsys, outcome):
    """trigger-eval on a run directory whose trigger.json is missing or malformed"""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "trigger.json").write_bytes(content)
    check(capsys, outcome, ["trigger-eval", "--run_dir", run_dir], names, run_dir)


@pytest.mark.parametrize("torn", [False, True], ids=["none", "only-a-torn-one"])
def test_trigger_eval_no_checkpoints(torn, trigger_run_dir, capsys, outcome):
    """trigger-eval on a run directory without a complete checkpoint"""
    (trigger_run_dir / "trigger_data").mkdir()
    write_lines(trigger_run_dir / "trigger_data" / "heldout.jsonl", jsonl([{"question": "Who?"}]))
    if torn:  # a run killed while saving: no completion marker
        (trigger_run_dir / "checkpoint-1").mkdir()
        (trigger_run_dir / "checkpoint-1" / "trainer_state.json").write_text('{"epoch": ')
    check(capsys, outcome, ["trigger-eval", "--run_dir", trigger_run_dir], ["trigger-run", "checkpoints"], trigger_run_dir)


def test_trigger_eval_corrupt_earlier_table(trigger_run_dir, capsys, outcome):
    """trigger-eval resuming from a trigger_eval.json that is not a table"""
    (trigger_run_dir / "trigger_data").mkdir()
    write_lines(trigger_run_dir / "trigger_data" / "heldout.jsonl", jsonl([{"question": "Who?"}]))
    (trigger_run_dir / "checkpoint-1").mkdir()
    (trigger_run_dir / "checkpoint-1" / "posttrain_checkpoint.json").write_text('{"epoch": 1.0}')
    (trigger_run_dir / "trigger_eval.json").write_text('[{"checkpoint": "checkpoint-1", ')
    check(capsys, outcome, ["trigger-eval", "--run_dir", trigger_run_dir], ["trigger_eval.json"], trigger_run_dir)


# -- config files and keys, for every command ------------------------------------------------------

# per command: a misspelt key (and the one meant), an int key, and an impossible (key, value)
CONFIG_KEYS = {
    "make-model": ("outt", "out", "seed", ("vocab_size", "10")),
    "sft": ("learning_rat", "learning_rate", "max_length", ("num_train_epochs", "0")),
    "dpo": ("betta", "beta", "max_length", ("beta", "-0.1")),
    "kto": ("desirable_weigth", "desirable_weight", "max_length", ("undesirable_weight", "0")),
    "rm": ("center_rewards_coeficient", "center_rewards_coefficient", "max_length", ("center_rewards_coefficient", "-1")),
    "sdpo": ("num_generation", "num_generations", "num_generations", ("num_generations", "1")),
    "grpo": ("temprature", "temperature", "max_completion_length", ("temperature", "0")),
    "discover": ("budjet", "budget", "budget", ("max_pass_rate", "1.5")),
    "trigger": ("qa_fil", "qa_file", "lora_r", ("heldout_fraction", "0.95")),
    "trigger-eval": ("run_dirr", "run_dir", "batch_size", ("max_new_tokens", "0")),
    "topics": ("num_topic", "num_topics", "num_topics", ("num_topics", "1")),
    "rollout": ("num_sample", "num_samples", "num_samples", ("top_p", "1.5")),
    "pairs": ("rollout", "rollouts", "seed", ("judge", "oracle")),
    "sft-data": ("min_word", "min_words", "min_words", ("max_per_prompt", "0")),
    "eval": ("num_example", "num_examples", "num_examples", ("num_examples", "0")),
    "export": ("model_dirr", "model_dir", "push_to_hub", ("dtype", "float8")),
    "chat": ("max_new_token", "max_new_tokens", "max_new_tokens", ("top_p", "1.5")),
}
assert set(CONFIG_KEYS) == set(COMMANDS), "every command needs a row here"

CONFIG_CASES = ["misspelt key", "wrong type", "impossible value"]


@pytest.mark.parametrize("case", CONFIG_CASES)
@pytest.mark.parametrize("command", list(CONFIG_KEYS))
def test_bad_config(command, case, tmp_path, capsys, outcome):
    """Bad config key or value for each command"""
    typo, meant, int_key, (bad_key, bad_value) = CONFIG_KEYS[command]
    out = tmp_path / "out"
    field = COMMANDS[command].output_field  # chat writes nothing
    argv = [command, *([f"--{field}", out] if field else [])]
    if case == "misspelt key":
        argv += [f"--{typo}", "1"]
        names = [f"'{typo}'", f"did you mean '{meant}'"]
    elif case == "wrong type":
        argv += [f"--{int_key}", "many"]
        names = [f"'{int_key}'", "many"]
    else:
        argv += [f"--{bad_key}", bad_value]
        names = [f"'{bad_key}'"]
    check(capsys, outcome, argv, names, out)


@pytest.mark.parametrize(
    "content, names",
    [
        (None, ["missing.yaml"]),
        (b"seed: 1\n\xff\xfe: 2\n", ["config.yaml", "UTF-8"]),
        (b"- seed\n- 1\n", ["config.yaml", "mapping"]),
        (b"seed: 1\n  out: 2\n", ["config.yaml:2"]),
        (b"seed: 1\nseed: [\n", ["config.yaml:"]),
        (b"seed: 1\nno_such_key: 3\n", ["config.yaml", "'no_such_key'"]),
        (b"seed: [1, 2]\n", ["config.yaml", "'seed'"]),
    ],
    ids=["missing-file", "non-UTF-8", "a-list", "bad-indent", "truncated", "unknown-key", "wrong-type"],
)
@pytest.mark.parametrize("command", ["make-model", "eval"])
def test_bad_config_file(command, content, names, tmp_path, capsys, outcome):
    """A config file that is missing, not UTF-8, not a YAML mapping, or holds a bad key"""
    config = tmp_path / ("missing.yaml" if content is None else "config.yaml")
    if content is not None:
        config.write_bytes(content)
    out = tmp_path / "out"
    check(capsys, outcome, [command, "--config", config, f"--{COMMANDS[command].output_field}", out], names, out)


def test_stray_argument(tmp_path, capsys, outcome):
    """A positional argument where only --key value overrides belong"""
    out = tmp_path / "out"
    check(capsys, outcome, ["sdpo", "--output_dir", out, "stray"], ["'stray'"], out)


MIXTURES = [
    # (id, dataset_mixture, extra argv, names)
    ("unknown-field", "[{name: 'task:arithmetic', wieght: 2}]", [], ["'dataset_mixture[0]'", "'wieght'", "'weight'"]),
    ("zero-weight", "[{name: 'task:arithmetic', weight: 0}]", [], ["'dataset_mixture[0].weight'", "> 0"]),
    ("negative-weight", "[{name: a.jsonl}, {name: b.jsonl, weight: -1}]", [], ["'dataset_mixture[1].weight'", "-1"]),
    ("bad-slice", "[{name: 'task:arithmetic', split: 'train[:5'}]", [], ["'dataset_mixture[0].split'", "'train[:5'"]),
    ("and-dataset_name", "[{name: 'task:arithmetic'}]", ["--dataset_name", "task:arithmetic"],
     ["'dataset_name'", "'dataset_mixture'"]),
    ("and-dataset_train_split", "[{name: 'task:arithmetic'}]", ["--dataset_train_split", "train[:8]"],
     ["'dataset_train_split'", "'dataset_mixture'"]),
]


@pytest.mark.parametrize("mixture, extra, names", [m[1:] for m in MIXTURES], ids=[m[0] for m in MIXTURES])
@pytest.mark.parametrize("command", ["sft", "dpo", "sdpo", "grpo"])
def test_bad_dataset_mixture(command, mixture, extra, names, tmp_path, capsys, outcome):
    """A malformed dataset_mixture, or one beside dataset_name / dataset_train_split"""
    out = tmp_path / "out"
    check(capsys, outcome, [command, "--output_dir", out, "--dataset_mixture", mixture, *extra], names, out)


@pytest.mark.parametrize("command, good, bad, names", [
    ("sft", OK_SFT, {"prompt": "What is 1 + 1?"}, ["bad.jsonl:1", "'completion'"]),
    ("dpo", {"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}, ["bad.jsonl:1", "'rejected'"]),
    ("sdpo", {"prompt": "q", "answer": "2"}, {"prompt": "q"}, ["bad.jsonl:1", "'answer'"]),
])
def test_dataset_mixture_source_that_does_not_fit(command, good, bad, names, tiny_model_dir, tmp_path, capsys, outcome):
    """A dataset_mixture source whose rows lack a field the command's format needs"""
    good_file = write_lines(tmp_path / "good.jsonl", jsonl([good]))
    bad_file = write_lines(tmp_path / "bad.jsonl", jsonl([bad]))
    out = tmp_path / "out"
    mixture = f"[{{name: {good_file}}}, {{name: {bad_file}}}]"
    argv = [command, "--model_name_or_path", tiny_model_dir, "--output_dir", out, "--dataset_mixture", mixture]
    check(capsys, outcome, argv, names, out)


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--task", "chess"], ["'chess'"]),
        (["--task_options", "{colour: red}"], ["colour"]),
        (["--split", "validation"], ["'validation'"]),
        (["--num_samples", "2", "--pass_k", "1,5"], ["'pass_k'"]),
    ],
    ids=["unknown-task", "unknown-task-option", "unknown-split", "pass-k-above-samples"],
)
def test_eval_bad_task(argv, names, tiny_model_dir, tmp_path, capsys, outcome):
    """eval with a task, split or pass@k it cannot have"""
    out = tmp_path / "out"
    check(capsys, outcome, ["eval", "--model_name_or_path", tiny_model_dir, "--output_dir", out, *argv], names, out)


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--reward_functions", "no_such_module:reward"], ["no_such_module"]),
        ([], ["'reward_functions'"]),
    ],
    ids=["module-missing", "none-for-a-file"],
)
def test_sdpo_bad_reward_functions(argv, names, tiny_model_dir, tmp_path, capsys, outcome):
    """sdpo on a prompts file with reward functions that cannot be used"""
    data = write_lines(tmp_path / "prompts.jsonl", jsonl([{"prompt": "What is 1 + 1?"}]))
    out = tmp_path / "out"
    argv = ["sdpo", "--model_name_or_path", tiny_model_dir, "--dataset_name", data, "--output_dir", out, *argv]
    check(capsys, outcome, argv, names, out)


# -- models and tokenizers ------------------------------------------------------------------------


def _model_argv(command: str, model: str, tmp_path: Path, out: Path) -> list:
    """The command run on ``model`` with otherwise valid inputs."""
    if command in ("sft", "sdpo", "grpo"):
        return [command, "--model_name_or_path", model, "--dataset_name", "task:arithmetic",
                "--dataset_train_split", "train[:4]", "--output_dir", out]
    if command == "dpo":
        data = write_lines(tmp_path / "pairs.jsonl", jsonl([{"prompt": "q", "chosen": "a", "rejected": "b"}]))
        return ["dpo", "--model_name_or_path", model, "--dataset_name", data, "--output_dir", out]
    if command == "rm":
        data = write_lines(tmp_path / "pairs.jsonl", jsonl([{"prompt": "q", "chosen": "a", "rejected": "b"}]))
        return ["rm", "--model_name_or_path", model, "--dataset_name", data, "--output_dir", out]
    if command == "dpo-reference":
        data = write_lines(tmp_path / "pairs.jsonl", jsonl([{"prompt": "q", "chosen": "a", "rejected": "b"}]))
        return ["dpo", "--model_name_or_path", model, "--ref_model_name_or_path", model, "--dataset_name", data,
                "--output_dir", out]
    if command == "trigger":
        data = write_lines(tmp_path / "qa.jsonl", jsonl([_qa(i) for i in range(3)]))
        return _trigger(data, model, out)
    if command == "rollout":
        return ["rollout", "--model_name_or_path", model, "--dataset_split", "train[:2]", "--output_dir", out]
    if command == "eval":
        return ["eval", "--model_name_or_path", model, "--num_examples", "2", "--output_dir", out]
    if command.startswith("pairs-"):
        data = write_lines(tmp_path / "rollouts.jsonl", jsonl([OK_ROLLOUT]))
        return ["pairs", "--rollouts", data, "--judge", command.removeprefix("pairs-"), "--judge_model", model,
                "--output_dir", out]
    raise AssertionError(command)


MODEL_COMMANDS = ["sft", "dpo", "rm", "sdpo", "trigger", "rollout", "eval", "pairs-logprob_ab", "pairs-reward_model"]


@pytest.mark.parametrize(
    "command, key", [("sft", "learning_rate"), ("sft", "max_length"), ("dpo", "beta"), ("rm", "eval_steps")]
)
def test_trainer_args_key_that_a_config_key_sets(command, key, tiny_model_dir, tmp_path, capsys, outcome):
    """trainer_args naming a TRL argument that posttrain sets from its own config key"""
    out = tmp_path / "out"
    argv = _model_argv(command, tiny_model_dir, tmp_path, out) + ["--trainer_args", f"{{{key}: 1}}"]
    check(capsys, outcome, argv, ["trainer_args", f"'{key}'", "config key"], out)


@pytest.mark.parametrize("command", MODEL_COMMANDS + ["dpo-reference"])
def test_missing_model_directory(command, tiny_model_dir, tmp_path, capsys, outcome):
    """A model directory that does not exist"""
    out = tmp_path / "out"
    model = str(tmp_path / "no-such-model")
    argv = _model_argv(command, model, tmp_path, out)
    if command == "dpo-reference":  # the policy is fine, the reference model is missing
        argv[argv.index("--model_name_or_path") + 1] = tiny_model_dir
    check(capsys, outcome, argv, ["no-such-model"], out)


@pytest.mark.parametrize("command", ["sft", "pairs-logprob_ab"])
def test_directory_without_a_model(command, tmp_path, capsys, outcome):
    """A directory that exists but holds no model (no config.json)"""
    model = tmp_path / "empty-model"
    model.mkdir()
    out = tmp_path / "out"
    check(capsys, outcome, _model_argv(command, str(model), tmp_path, out), ["empty-model", "config.json"], out)


@pytest.mark.parametrize("command", MODEL_COMMANDS[:-1])
def test_tokenizer_without_pad_and_eos(command, broken_tokenizer_dir, tmp_path, capsys, outcome):
    """A model whose tokenizer has no pad and no eos token"""
    out = tmp_path / "out"
    check(capsys, outcome, _model_argv(command, broken_tokenizer_dir, tmp_path, out), ["eos_token", "tokenizer_config.json"], out)


# -- pipelines ------------------------------------------------------------------------------------

GOOD_STAGE = "  - name: model\n    command: make-model\n"

PIPELINES = [
    ("invalid-YAML", "name: p\nstages: [\n", ["pipeline.yaml:"]),
    ("non-UTF-8", b"name: p\xff\nstages: []\n", ["pipeline.yaml", "UTF-8"]),
    ("not-a-mapping", "- model\n- sft\n", ["pipeline.yaml", "mapping"]),
    ("unknown-key", "name: p\nstagez: []\n", ["pipeline.yaml", "'stagez'"]),
    ("no-stages", "name: p\nstages: []\n", ["pipeline.yaml", "'stages'"]),

    ("unknown-stage-key", f"name: p\nstages:\n{GOOD_STAGE}    confg: {{}}\n", ["pipeline.yaml", "'confg'"]),
    ("duplicate-stage", f"name: p\nstages:\n{GOOD_STAGE}{GOOD_STAGE}", ["pipeline.yaml", "'model'"]),
    ("unknown-command", "name: p\nstages:\n  - name: a\n    command: train\n", ["pipeline.yaml", "'train'"]),
    ("unknown-reference", "name: p\nstages:\n  - name: e\n    command: eval\n    config: {model_name_or_path: '${nope}'}\n",
     ["pipeline.yaml", "${nope}"]),
    ("stage-unknown-config-key", f"name: p\nstages:\n{GOOD_STAGE}    config: {{presett: tiny}}\n",
     ["pipeline.yaml", "'presett'"]),
    ("stage-wrong-type", f"name: p\nstages:\n{GOOD_STAGE}    config: {{vocab_size: lots}}\n", ["pipeline.yaml", "'vocab_size'"]),
    ("stage-config-a-list", f"name: p\nstages:\n{GOOD_STAGE}    config: [1, 2]\n", ["pipeline.yaml", "'config'"]),
    ("stage-config-file-missing", f"name: p\nstages:\n{GOOD_STAGE}    config_file: nope.yaml\n", ["nope.yaml"]),
    ("name-not-a-string", f"name: [a]\nstages:\n{GOOD_STAGE}", ["pipeline.yaml", "'name'"]),
    ("output-root-not-a-string", f"name: p\noutput_root: {{a: 1}}\nstages:\n{GOOD_STAGE}", ["pipeline.yaml", "'output_root'"]),
]


@pytest.mark.parametrize("content, names", [p[1:] for p in PIPELINES], ids=[p[0] for p in PIPELINES])
def test_bad_pipeline(content, names, tmp_path, capsys, outcome):
    """A malformed pipeline YAML for run"""
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "runs"
    check(capsys, outcome, ["run", pipeline, "--output-root", out], names, out)


def test_missing_pipeline_file(tmp_path, capsys, outcome):
    """run on a pipeline file that does not exist"""
    out = tmp_path / "runs"
    check(capsys, outcome, ["run", tmp_path / "nope.yaml", "--output-root", out], ["nope.yaml"], out)


# -- the real process -----------------------------------------------------------------------------


def _process(argv: list, cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "posttrain.cli", *map(str, argv)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )
    return result.returncode, result.stderr


SUBPROCESS_CASES = ["sft-invalid-JSON", "pairs-non-UTF-8", "run-invalid-YAML"]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_real_process(case, tiny_model_dir, tmp_path, outcome):
    """The posttrain process itself: exit status 2, one stderr line, no traceback"""
    out = tmp_path / "out"
    if case == "sft-invalid-JSON":
        data = write_lines(tmp_path / "data.jsonl", [json.dumps(OK_SFT), '{"prompt": "a", "completion": '])
        argv, names = _sft(data, tiny_model_dir, out), ["data.jsonl:2"]
    elif case == "pairs-non-UTF-8":
        data = write_lines(tmp_path / "rollouts.jsonl", [json.dumps(OK_ROLLOUT), b'{"id": "\xc3\x28"}'])
        argv, names = ["pairs", "--rollouts", data, "--output_dir", out], ["rollouts.jsonl:2", "UTF-8"]
    else:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(f"name: p\nstages:\n{GOOD_STAGE}    config: {{preset: tiny\n")
        argv, names = ["run", pipeline, "--output-root", out], ["pipeline.yaml:"]
    before = snapshot(out)
    code, stderr = _process(argv, tmp_path)
    line = assert_clean_error(code, stderr, argv[0], names, before, snapshot(out))
    outcome(f"exit {code}: {line}")
