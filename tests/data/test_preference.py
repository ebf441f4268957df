"""Preference rows: formats, HH-RLHF splitting, counted skips, clear errors."""

import pytest

from posttrain.data.preference import hh_to_messages, normalize_pairs, split_hh_transcript
from posttrain.errors import DataError
from posttrain.tasks.sources import load_rows

HH = "examples/data/hh_rlhf_sample.jsonl"


def test_hh_split_keeps_prompt_through_last_assistant_marker():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant: 4"
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant: 5"
    prompt, good, bad = split_hh_transcript(chosen, rejected, "x")
    assert prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant:"
    assert (good, bad) == (" 4", " 5")
    with pytest.raises(DataError, match="x: 'chosen' and 'rejected' transcripts differ"):
        split_hh_transcript(chosen, "\n\nHuman: other\n\nAssistant: 5", "x")


def test_hh_to_messages():
    messages = hh_to_messages("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye", "x")
    assert messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "bye"}]


def test_shipped_hh_fixture_as_messages_and_text():
    rows = load_rows(HH, "train")
    as_messages = normalize_pairs(rows, hh_format="messages")
    assert len(as_messages) == 6
    multi = as_messages[4]
    assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user"]
    assert multi["chosen"][0]["content"].startswith("Start with a simple tomato sauce")
    as_text = normalize_pairs(rows, base_model_mode=True, hh_format="text")
    assert as_text[0]["prompt"] == "\n\nHuman: What is the capital of France?\n\nAssistant:"
    assert as_text[0]["chosen"] == " The capital of France is Paris."
    assert len(load_rows(HH, "train[:50%]")) == 3


def test_string_pairs_become_chat_turns_or_base_format():
    rows = [("p:1", {"prompt": "2+2?", "chosen": "4", "rejected": "5"})]
    chat = normalize_pairs(rows)[0]
    assert chat == {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
                    "rejected": [{"role": "assistant", "content": "5"}]}
    base = normalize_pairs(rows, base_model_mode=True)[0]
    assert base == {"prompt": "Instruction: 2+2?\nResponse:", "chosen": " 4\nEND", "rejected": " 5\nEND"}


def test_base_pairs_from_sampled_continuations_match_the_sft_text():
    """A base model's rollout keeps the space after "Response:" and the newline before END; the
    pair must read as SFT wrote the same answer (one space, one newline), or DPO trains the model
    on "Response:  ..." and "\\n\\nEND", text it never saw in SFT and should not learn to write."""
    from posttrain.data.base_format import base_format

    rows = [("p:1", {"prompt": "2+2?", "chosen": " 2+2=4. Answer: 4\n", "rejected": " Answer: 5\n"})]
    pair = normalize_pairs(rows, base_model_mode=True)[0]
    assert pair["prompt"] + pair["chosen"] == base_format("2+2?", "2+2=4. Answer: 4")
    assert pair["chosen"] == " 2+2=4. Answer: 4\nEND" and pair["rejected"] == " Answer: 5\nEND"


def test_degenerate_pairs_are_counted_and_skipped(caplog):
    rows = [("p:1", {"prompt": "a", "chosen": "same", "rejected": "same"}),
            ("p:2", {"prompt": "a", "chosen": "", "rejected": "x"}),
            ("p:3", {"prompt": "a", "chosen": "good", "rejected": "bad"})]
    assert len(normalize_pairs(rows)) == 1
    assert "skipped 1 of 3 pairs: chosen identical to rejected" in caplog.text
    assert "skipped 1 of 3 pairs: empty response" in caplog.text
    with pytest.raises(DataError, match="no usable preference pairs"):
        normalize_pairs(rows[:2])


@pytest.mark.parametrize("row, message", [
    ({"prompt": "a", "chosen": "b"}, "p:9: missing field 'rejected'"),
    ({"chosen": ["x"], "rejected": ["y"]}, "p:9: field 'chosen'\\[0\\] must be an object with string 'role'"),
    ({"prompt": "a", "chosen": 3, "rejected": "b"}, "p:9: field 'chosen' must be a string or a list of messages"),
    ({"chosen": "no markers", "rejected": "x"}, r"p:9: field 'chosen' has no '\\n\\nAssistant:' turn"),
])
def test_malformed_rows_name_location_and_field(row, message):
    with pytest.raises(DataError, match=message):
        normalize_pairs([("p:9", row)])


def test_arithmetic_pairs_are_verified():
    from posttrain.tasks.arithmetic import ArithmeticTask

    task = ArithmeticTask()
    pairs = task.make_pairs("train", n=500)
    assert all(task.score(p["prompt"], p["chosen"])[0] == 1.0 for p in pairs)
    assert all(task.score(p["prompt"], p["rejected"])[0] == 0.0 for p in pairs)
    assert {p["prompt"] for p in pairs} == {r["prompt"] for r in task.make_dataset("train", n=500)}
