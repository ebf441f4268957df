"""Unpaired rows for KTO: labelled completions checked and formatted; pairs split in two."""

import pytest

from posttrain.data.preference import normalize_unpaired
from posttrain.errors import DataError


def test_labelled_completions_become_chat_turns_or_the_base_format():
    rows = [("d:1", {"prompt": "What is 1 + 1?", "completion": "2", "label": True}),
            ("d:2", {"prompt": [{"role": "user", "content": "What is 1 + 2?"}], "completion": "4", "label": False})]
    chat = normalize_unpaired(rows)
    assert chat[0] == {"prompt": [{"role": "user", "content": "What is 1 + 1?"}],
                       "completion": [{"role": "assistant", "content": "2"}], "label": True}
    assert chat[1]["prompt"] == rows[1][1]["prompt"] and chat[1]["label"] is False
    base = normalize_unpaired(rows[:1], base_model_mode=True)
    assert base == [{"prompt": "Instruction: What is 1 + 1?\nResponse:", "completion": " 2\nEND", "label": True}]
    with pytest.raises(DataError, match="d:2: base_model_mode needs string prompt/completion"):
        normalize_unpaired(rows, base_model_mode=True)


def test_pairs_give_a_desirable_and_an_undesirable_row_each():
    rows = [(f"p:{i}", {"prompt": f"q{i}", "chosen": "good", "rejected": "bad"}) for i in range(2)]
    unpaired = normalize_unpaired(rows)
    assert [(row["prompt"][0]["content"], row["completion"][0]["content"], row["label"]) for row in unpaired] == [
        ("q0", "good", True), ("q0", "bad", False), ("q1", "good", True), ("q1", "bad", False)]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "completion": "a"}, "d:1: missing field 'label'"),
    ({"prompt": "q", "completion": "a", "label": "yes"}, "d:1: field 'label' must be true .* or false"),
    ({"prompt": "q", "completion": "a", "label": 1}, "d:1: field 'label' must be true"),
    ({"completion": "a", "label": True}, "d:1: missing field 'prompt'"),
    ({"prompt": "q", "completion": [{"role": "assistant"}], "label": True}, "d:1: .*'completion'"),
])
def test_malformed_rows_name_the_row_and_field(row, message):
    with pytest.raises(DataError, match=message):
        normalize_unpaired([("d:0", {"prompt": "q", "completion": "a", "label": True}), ("d:1", row)])


def test_empty_completions_are_skipped_and_counted():
    rows = [("d:0", {"prompt": "q", "completion": "a", "label": True}), ("d:1", {"prompt": "q", "completion": " ", "label": False})]
    assert len(normalize_unpaired(rows)) == 1
    with pytest.raises(DataError, match="no usable rows \\(1 with an empty completion\\)"):
        normalize_unpaired(rows[1:])
