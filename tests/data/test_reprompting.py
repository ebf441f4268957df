"""SDPO reprompting, case by case: demonstrations, feedback rules, templates, truncation."""

import pytest

from posttrain.errors import PosttrainError
from posttrain.data.reprompting import (
    RepromptSettings,
    build_teacher_inputs,
    demonstration_index,
    first_divergence,
    select_demonstration,
    teacher_messages,
    token_at_character,
)

SYSTEM = {"role": "system", "content": "Be exact."}
USER = {"role": "user", "content": "What is 1 + 2?"}


def test_first_successful_sibling_is_the_demonstration():
    s = RepromptSettings()
    completions, rewards = ["w0", "r1", "r2", "w3"], [0.0, 1.0, 1.0, 0.0]
    assert select_demonstration(0, completions, rewards, s) == "r1"
    assert select_demonstration(3, completions, rewards, s) == "r1"
    assert select_demonstration(1, completions, rewards, s) == "r2"  # never its own teacher
    assert select_demonstration(1, completions, rewards, RepromptSettings(dont_reprompt_on_self_success=False)) == "r1"
    assert select_demonstration(0, ["w", "only"], [0.0, 1.0], s) == "only"
    assert select_demonstration(1, ["w", "only"], [0.0, 1.0], s) is None  # the only success is itself
    assert select_demonstration(0, ["a", "b"], [0.9, 0.99], s) is None  # below the 1.0 threshold
    assert select_demonstration(0, ["a", "b"], [0.0, 0.5], RepromptSettings(success_reward_threshold=0.5)) == "b"


def test_thinking_is_removed_from_demonstrations():
    completions, rewards = ["w", "<think>long\nreasoning</think>\nAnswer: 3"], [0.0, 1.0]
    assert select_demonstration(0, completions, rewards, RepromptSettings()) == "Answer: 3"
    kept = select_demonstration(0, completions, rewards, RepromptSettings(remove_thinking_from_demonstration=False))
    assert kept == "<think>long\nreasoning</think>\nAnswer: 3"


def test_default_templates_and_system_messages_kept():
    messages = teacher_messages([SYSTEM, USER], "Answer: 3", None, RepromptSettings())
    assert messages[0] == SYSTEM
    assert messages[1] == {"role": "user", "content": "What is 1 + 2?\nCorrect solution:\n\nAnswer: 3\n\n\n\nCorrectly solve the original question.\n"}
    feedback_only = teacher_messages([USER], None, "wrong carry", RepromptSettings())
    assert feedback_only[0]["content"] == (
        "What is 1 + 2?\nThe following is feedback from your unsuccessful earlier attempt:\n\nwrong carry\n\n"
        "\n\nCorrectly solve the original question.\n"
    )


def test_only_the_last_user_turn_is_replaced():
    conversation = [SYSTEM, {"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"}, USER]
    messages = teacher_messages(conversation, "Answer: 3", None, RepromptSettings())
    assert messages[:3] == conversation[:3]
    assert messages[3]["content"].startswith("What is 1 + 2?\nCorrect solution:")


@pytest.mark.parametrize(
    "settings, demonstration, feedback, has_solution, has_feedback",
    [
        (RepromptSettings(), "demo", "fb", True, False),  # feedback only without a solution
        (RepromptSettings(), None, "fb", False, True),
        (RepromptSettings(environment_feedback_only_without_solution=False), "demo", "fb", True, True),
        (RepromptSettings(include_environment_feedback=False), None, "fb", None, None),  # nothing: masked
        (RepromptSettings(include_environment_feedback=False), "demo", "fb", True, False),
        (RepromptSettings(), None, None, None, None),
        (RepromptSettings(), None, "", None, None),
    ],
)
def test_feedback_rules(settings, demonstration, feedback, has_solution, has_feedback):
    messages = teacher_messages([USER], demonstration, feedback, settings)
    if has_solution is None:
        assert messages is None
        return
    content = messages[0]["content"]
    assert ("Correct solution:" in content) == has_solution
    assert ("feedback from your unsuccessful" in content) == has_feedback


def test_custom_templates():
    settings = RepromptSettings(reprompt_template="[{prompt}|{solution}|{feedback}]", solution_template="S={successful_previous_attempt}",
                                feedback_template="F={feedback_raw}", environment_feedback_only_without_solution=False)
    assert teacher_messages([USER], "d", "f", settings)[0]["content"] == "[What is 1 + 2?|S=d|F=f]"


def _ids(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_teacher_inputs_append_the_students_tokens_and_mask_samples_without_signal(tokenizer):
    completions = ["wrong 4", "Answer: 3", "wrong 5", "wrong 6"]
    rewards = [0.0, 1.0, 0.0, 0.0]
    feedbacks = ["fb-0", None, "fb-2", None]
    # two groups of two: (0, 1) has a success; (2, 3) has none, only sample 2 has feedback
    inputs = build_teacher_inputs(tokenizer, [[USER]] * 4, _ids(tokenizer, completions), completions, rewards, feedbacks, 2, RepromptSettings())
    assert [i.has_signal for i in inputs] == [True, False, True, False]
    for teacher, ids in zip(inputs, _ids(tokenizer, completions)):
        assert teacher.input_ids[teacher.completion_start :] == ids
    prompt_of = [tokenizer.decode(t.input_ids[: t.completion_start]) for t in inputs]
    assert "Correct solution:\n\nAnswer: 3" in prompt_of[0]
    assert "fb-2" in prompt_of[2] and "fb-0" not in prompt_of[2]  # feedback reaches its own sample only
    assert "fb" not in prompt_of[3] and prompt_of[3].endswith("<|im_start|>assistant\n")
    assert prompt_of[1] == tokenizer.apply_chat_template([USER], tokenize=False, add_generation_prompt=True)
    # the batch index of the sample shown as demonstration: 1 for sample 0; none for 1 (its own
    # success is never its teacher) or for the group without a success
    assert [i.demonstration for i in inputs] == [1, None, None, None]


def test_truncation_sides(tokenizer):
    def build(side, limit):
        settings = RepromptSettings(max_reprompt_len=limit, reprompt_truncation=side)
        return build_teacher_inputs(tokenizer, [[USER]] * 2, [[7], [8]], ["x", "y"], [0.0, 1.0], [None, None], 2, settings)[0]

    full = build("right", 10_000)
    right, left = build("right", 5), build("left", 5)
    assert right.completion_start == left.completion_start == 5
    assert right.input_ids[:5] == full.input_ids[:5] and left.input_ids[:5] == full.input_ids[full.completion_start - 5 : full.completion_start]
    assert right.input_ids[5:] == left.input_ids[5:] == [7]
    with pytest.raises(PosttrainError, match="exceeds max_reprompt_len=5"):
        build("error", 5)


def test_chat_template_kwargs_are_forwarded(tokenizer):
    import copy

    custom = copy.deepcopy(tokenizer)
    custom.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if enable_thinking %}<think>{% endif %}"
    settings = RepromptSettings(chat_template_kwargs={"enable_thinking": True})
    teacher = build_teacher_inputs(custom, [[USER]] * 2, [[7], [8]], ["x", "y"], [0.0, 1.0], [None, None], 2, settings)[0]
    assert custom.decode(teacher.input_ids[: teacher.completion_start]).endswith("<think>")


def test_batch_must_be_whole_groups(tokenizer):
    with pytest.raises(ValueError, match="not a whole number of groups"):
        build_teacher_inputs(tokenizer, [[USER]] * 3, [[1]] * 3, ["a"] * 3, [0.0] * 3, [None] * 3, 2, RepromptSettings())


def test_demonstration_index_is_the_first_success_not_self():
    s = RepromptSettings()
    assert demonstration_index(0, [0.0, 1.0, 1.0], s) == 1
    assert demonstration_index(1, [0.0, 1.0, 1.0], s) == 2
    assert demonstration_index(1, [0.0, 1.0, 1.0], RepromptSettings(dont_reprompt_on_self_success=False)) == 1
    assert demonstration_index(0, [0.0, 0.5], s) is None


@pytest.mark.parametrize(
    "ids, demonstration, expected",
    [
        ([5, 6, 7, 8], [5, 6, 9], 2),  # leaves it at position 2
        ([4, 6], [5, 6], 0),  # at the first token
        ([5, 6, 9, 1], [5, 6, 9], 3),  # runs on past the demonstration's end
        ([5, 6], [5, 6, 9], None),  # a prefix never leaves it
        ([5, 6, 9], [5, 6, 9], None),  # identical
        ([], [5], None),
    ],
)
def test_first_divergence_by_hand(ids, demonstration, expected):
    assert first_divergence(ids, demonstration) == expected


class PieceTokenizer:
    """Token i decodes to PIECES[i]; token 0 is special (skipped when asked)."""

    PIECES = ["<s>", "7+", "8=", "14", " carry", " 1."]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.PIECES[i] for i in ids if not (skip_special_tokens and i == 0))


@pytest.mark.parametrize(
    "ids, offset, expected",
    [  # "7+8=14 carry 1.": characters 0-1 in token 1, 2-3 in token 2, 4-5 in token 3 (index 2 of ids [1..5])
        ([1, 2, 3, 4, 5], 0, 0),
        ([1, 2, 3, 4, 5], 4, 2),  # the '1' of '14'
        ([1, 2, 3, 4, 5], 5, 2),
        ([1, 2, 3, 4, 5], 6, 3),  # ' carry' starts at 6
        ([1, 2, 3, 4, 5], 14, 4),  # the last character
        ([1, 2, 3, 4, 5], 15, None),  # past the text: no token holds it
        ([0, 1, 2, 3], 4, 3),  # a special token decodes to nothing and shifts nothing
        ([], 0, None),
    ],
)
def test_token_at_character_by_hand(ids, offset, expected):
    assert token_at_character(PieceTokenizer(), ids, offset) == expected


@pytest.mark.parametrize("settings, solution, feedback", [  # the paper's Table 6 (Hübotter et al. 2026)
    (RepromptSettings(include_environment_feedback=False), True, False),  # solution only
    (RepromptSettings(include_successful_demonstration=False), False, True),  # environment feedback only
    (RepromptSettings(environment_feedback_only_without_solution=False), True, True),  # both
])
def test_the_three_teacher_contexts_of_the_papers_ablation(tokenizer, settings, solution, feedback):
    """A group of two: sample 0 failed with feedback, sample 1 succeeded. Sample 0's teacher sees
    the sibling's solution, the feedback, or both, as the ablation asks."""
    inputs = build_teacher_inputs(tokenizer, [[USER], [USER]], [[1], [2]], ["wrong", "right"], [0.0, 1.0], ["fb", None], 2, settings)
    text = tokenizer.decode(inputs[0].input_ids)
    assert ("Correct solution:" in text) == solution and ("feedback from your unsuccessful" in text) == feedback
    assert inputs[0].has_signal and (inputs[0].demonstration == 1) == solution
