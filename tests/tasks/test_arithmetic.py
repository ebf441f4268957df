"""Unit tests for the arithmetic task (posttrain.tasks.arithmetic) and the task registry."""

from __future__ import annotations

import random
import re

import pytest

from posttrain.errors import ConfigError
from posttrain.tasks import get_task
from posttrain.tasks.arithmetic import OTHER_EXCHANGES, PAGE_TERMINATORS, ArithmeticTask, extract_answer, scratchpad_steps, solve

# ---------------------------------------------------------------------------------------------
# solve(): scratchpads worked out by hand


@pytest.mark.parametrize(
    "a, b, digits, expected",
    [
        (47, 38, 2, "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85"),
        (99, 99, 2, "9+9=18 carry 1. 9+9+1=19 carry 1. Answer: 198"),
        (10, 10, 2, "0+0=0 carry 0. 1+1+0=2 carry 0. Answer: 20"),
        (12, 34, 2, "2+4=6 carry 0. 1+3+0=4 carry 0. Answer: 46"),
        (456, 789, 3, "6+9=15 carry 1. 5+8+1=14 carry 1. 4+7+1=12 carry 1. Answer: 1245"),
        (305, 205, 3, "5+5=10 carry 1. 0+0+1=1 carry 0. 3+2+0=5 carry 0. Answer: 510"),
        (5, 7, 1, "5+7=12 carry 1. Answer: 12"),
    ],
)
def test_solve_scratchpad(a, b, digits, expected):
    """The scratchpad adds column by column from the least significant digit, carrying."""
    assert solve(a, b, digits) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("Answer: 85", 85), ("x Answer: 1 y Answer:  42", 42), ("Answer:-7", -7), ("no answer here", None), ("Answer: x", None)],
)
def test_extract_answer(text, expected):
    """extract_answer takes the integer after the last 'Answer:' (None if there is none)."""
    assert extract_answer(text) == expected


# ---------------------------------------------------------------------------------------------
# datasets


def test_rows_have_prompt_completion_answer():
    """Each row carries prompt, scratchpad completion, answer and the operands."""
    row = ArithmeticTask(digits=2, test_size=10, seed=0).make_dataset("test", n=1)[0]
    assert set(row) == {"prompt", "completion", "answer", "a", "b"}
    assert row["prompt"] == f"What is {row['a']} + {row['b']}?"
    assert row["answer"] == row["a"] + row["b"]
    assert row["completion"] == solve(row["a"], row["b"], 2)
    assert 10 <= row["a"] <= 99 and 10 <= row["b"] <= 99


def test_split_sizes_and_disjoint_cover_whole_space():
    """2-digit: 90*90 = 8100 problems; test has test_size, train the rest, disjoint and covering all."""
    task = ArithmeticTask(digits=2, test_size=300, seed=0)
    train = task.make_dataset("train")
    test = task.make_dataset("test")
    assert (len(train), len(test)) == (7800, 300)
    train_pairs = {(r["a"], r["b"]) for r in train}
    test_pairs = {(r["a"], r["b"]) for r in test}
    assert len(train_pairs) == 7800 and len(test_pairs) == 300
    assert not train_pairs & test_pairs
    assert train_pairs | test_pairs == {(a, b) for a in range(10, 100) for b in range(10, 100)}


def test_one_digit_space():
    """1-digit operands are 1..9 (81 problems)."""
    task = ArithmeticTask(digits=1, test_size=1)
    train, test = task.make_dataset("train"), task.make_dataset("test")
    assert (len(train), len(test)) == (80, 1)
    assert {(r["a"], r["b"]) for r in train + test} == {(a, b) for a in range(1, 10) for b in range(1, 10)}


def test_n_limits_rows_and_is_a_prefix():
    """n takes the first n rows of the split."""
    task = ArithmeticTask(digits=2, test_size=50, seed=3)
    assert task.make_dataset("train", n=5) == task.make_dataset("train")[:5]
    assert len(task.make_dataset("test", n=7)) == 7


def test_same_seed_same_rows():
    """Two tasks with the same seed give identical splits."""
    a = ArithmeticTask(digits=2, test_size=100, seed=7)
    b = ArithmeticTask(digits=2, test_size=100, seed=7)
    assert a.make_dataset("train") == b.make_dataset("train")
    assert a.make_dataset("test") == b.make_dataset("test")


def test_different_seed_different_order():
    """A different seed changes the order (and the held-out set)."""
    a = ArithmeticTask(digits=2, test_size=100, seed=0)
    b = ArithmeticTask(digits=2, test_size=100, seed=1)
    assert [r["prompt"] for r in a.make_dataset("train", n=50)] != [r["prompt"] for r in b.make_dataset("train", n=50)]
    assert {r["prompt"] for r in a.make_dataset("test")} != {r["prompt"] for r in b.make_dataset("test")}


def test_large_space_split_is_disjoint_and_sized():
    """4-digit operands (sampled, not enumerated) still give disjoint, distinct, in-range splits."""
    task = ArithmeticTask(digits=4, test_size=50, seed=0)
    train = task.make_dataset("train", n=2000)
    test = task.make_dataset("test")
    assert (len(train), len(test)) == (2000, 50)
    train_pairs = {(r["a"], r["b"]) for r in train}
    test_pairs = {(r["a"], r["b"]) for r in test}
    assert len(train_pairs) == 2000 and not train_pairs & test_pairs
    assert all(1000 <= a <= 9999 and 1000 <= b <= 9999 for a, b in train_pairs | test_pairs)


def test_large_test_size_is_rejected_or_leaves_train_rows():
    """A test_size the task accepts must leave training rows (else it should be a ConfigError)."""
    try:
        task = ArithmeticTask(digits=4, test_size=250_000)
    except ConfigError:
        return
    assert len(task.make_dataset("train", n=10)) == 10


# ---------------------------------------------------------------------------------------------
# scoring


TASK = ArithmeticTask(digits=2, test_size=10)
PROMPT = "What is 47 + 38?"
RIGHT = "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85"


def test_score_right_answer():
    """The reference solution scores 1.0 with no feedback."""
    assert TASK.score(PROMPT, RIGHT) == (1.0, None)


def test_score_right_answer_without_scratchpad():
    """By default the verifier checks only the final answer."""
    assert TASK.score(PROMPT, "Answer: 85") == (1.0, None)


def test_score_last_answer_wins():
    """Only the last 'Answer:' counts."""
    assert TASK.score(PROMPT, "Answer: 84. Wait, no. Answer: 85")[0] == 1.0
    reward, feedback = TASK.score(PROMPT, RIGHT + ". Hmm. Answer: 84")
    assert reward == 0.0
    assert feedback == "The steps are right, so the answer is 85, not 84."


def test_score_uses_row_operands_over_prompt():
    """With a and b in the row the prompt need not be parseable."""
    assert TASK.score("anything", "Answer: 85", a=47, b=38, answer=85) == (1.0, None)
    assert TASK.score("What is 10 + 10?", "Answer: 85", a=47, b=38)[0] == 1.0


def test_score_parses_operands_from_prompt_only():
    """Without a/b in the row, the operands come from the prompt text (also inside a template)."""
    assert TASK.score("What is 12 + 34?", "Answer: 46") == (1.0, None)
    assert TASK.score("<|user|>\nWhat is 12 + 34?\n<|assistant|>", "Answer: 46")[0] == 1.0
    assert TASK.score("What is 12 + 34?", "Answer: 47")[0] == 0.0


def test_score_unparseable_prompt_raises():
    """A prompt without 'What is a + b?' and no a/b is a ValueError quoting the prompt."""
    with pytest.raises(ValueError, match="cannot parse the problem"):
        TASK.score("Compute 1 plus 2", "Answer: 3")


def test_feedback_wrong_digit_sum():
    """A wrong column sum names the step, what it should be and what was written."""
    assert TASK.score(PROMPT, "7+8=14 carry 1. 4+3+1=8 carry 0. Answer: 84") == (
        0.0,
        "Step 1 should be: 7+8=15 carry 1. You wrote: 7+8=14 carry 1.",
    )


def test_feedback_wrong_digits_added_and_missing_step():
    """Adding the wrong digits is named; a step that is not there is called missing."""
    assert TASK.score(PROMPT, "7+3=10 carry 1. Answer: 84")[1] == "Step 1 should be: 7+8=15 carry 1. You wrote: 7+3=10 carry 1."
    assert TASK.score(PROMPT, "7+8=15 carry 1. Answer: 84")[1] == "Step 2 is missing. Step 2 should be: 4+3+1=8 carry 0."


def test_feedback_forgotten_carry_in_step_two():
    """Dropping the carry in step 2 names step 2 with the carry in it."""
    assert TASK.score(PROMPT, "7+8=15 carry 1. 4+3=7 carry 0. Answer: 75") == (
        0.0,
        "Step 2 should be: 4+3+1=8 carry 0. You wrote: 4+3=7 carry 0.",
    )


def test_feedback_malformed_step_keeps_later_step_numbers():
    """A malformed first step is step 1 (it used to be skipped, shifting the numbers)."""
    completion = "7+8 is fifteen. 4+3+1=9 carry 0. Answer: 95"
    assert TASK.score(PROMPT, completion)[1] == "Step 1 should be: 7+8=15 carry 1. You wrote: 7+8 is fifteen."
    from posttrain.tasks.arithmetic import scratchpad_steps

    assert scratchpad_steps(completion) == ["7+8 is fifteen.", "4+3+1=9 carry 0."]


def test_feedback_extra_step():
    reward, feedback = TASK.score(PROMPT, "7+8=15 carry 1. 4+3+1=8 carry 0. 0+0+0=0 carry 0. Answer: 84")
    assert reward == 0.0
    assert feedback == "There are 2 steps, then the answer. You wrote more: 0+0+0=0 carry 0."


def test_feedback_final_answer_wrong_after_correct_steps():
    """Correct steps but a wrong final number: the right answer is given."""
    reward, feedback = TASK.score(PROMPT, "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 84")
    assert reward == 0.0
    assert feedback == "The steps are right, so the answer is 85, not 84."


def test_feedback_no_answer():
    """A completion without 'Answer:' gets feedback with the ending it needs."""
    reward, feedback = TASK.score(PROMPT, "7+8=15 carry 1. 4+3+1=8 carry 0.")
    assert reward == 0.0
    assert feedback == "No final answer. It should end with: Answer: 85"


def test_feedback_empty_completion():
    """An empty completion scores 0; its first step is missing."""
    assert TASK.score(PROMPT, "") == (0.0, "Step 1 is missing. Step 1 should be: 7+8=15 carry 1.")


def test_feedback_three_digit_step_three():
    """For 3 digits, a wrong third column is named as step 3."""
    task = ArithmeticTask(digits=3, test_size=10)
    completion = "6+9=15 carry 1. 5+8+1=14 carry 1. 4+7+1=11 carry 1. Answer: 1145"
    assert task.score("What is 456 + 789?", completion) == (0.0, "Step 3 should be: 4+7+1=12 carry 1. You wrote: 4+7+1=11 carry 1.")
    assert task.score("What is 456 + 789?", solve(456, 789, 3)) == (1.0, None)


def test_check_steps_refuses_a_right_answer_from_wrong_steps():
    """Without check_steps only the answer counts; with it, every step must be the reference's."""
    lucky = "7+8=15 carry 1. 4+3+1=9 carry 0. Answer: 85"  # wrong step 2, right answer
    strict = ArithmeticTask(digits=2, test_size=10, check_steps=True)
    assert TASK.score(PROMPT, lucky) == (1.0, None)
    assert strict.score(PROMPT, lucky) == (0.0, "Step 2 should be: 4+3+1=8 carry 0. You wrote: 4+3+1=9 carry 0.")
    assert strict.score(PROMPT, "Answer: 85")[0] == 0.0
    assert strict.score(PROMPT, RIGHT) == (1.0, None)


def test_every_reference_completion_scores_one():
    """All rows' own completions are correct (scored with the row fields as eval passes them)."""
    task = ArithmeticTask(digits=2, test_size=100, seed=5)
    for row in task.make_dataset("test"):
        fields = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
        assert task.score(row["prompt"], row["completion"], **fields) == (1.0, None)


# ---------------------------------------------------------------------------------------------
# hinted prompt


def test_hinted_prompt_is_the_sdpo_teacher_prompt_with_the_solution():
    """Written out by hand from the reference code's default templates."""
    row = {"prompt": PROMPT, "a": 47, "b": 38}
    expected = f"{PROMPT}\nCorrect solution:\n\n{RIGHT}\n\n\n\nCorrectly solve the original question.\n"
    assert TASK.hinted_prompt(row) == expected


def test_feedback_prompt_carries_the_feedback_on_a_wrong_attempt():
    row = {"prompt": PROMPT, "a": 47, "b": 38}
    prompt = TASK.feedback_prompt(row, random.Random(0))
    head = f"{PROMPT}\nThe following is feedback from your unsuccessful earlier attempt:\n\n"
    assert prompt.startswith(head)
    assert prompt.endswith("\n\n\n\nCorrectly solve the original question.\n")
    feedback = prompt[len(head) : -len("\n\n\n\nCorrectly solve the original question.\n")]
    assert feedback and RIGHT not in prompt  # feedback only, never the solution


def test_teacher_fraction_mixes_teacher_prompts_into_train_only():
    task = ArithmeticTask(test_size=100, seed=3, teacher_fraction=0.4)
    plain = ArithmeticTask(test_size=100, seed=3)
    train, reference = task.make_dataset("train", 2000), plain.make_dataset("train", 2000)
    changed = [row for row, ref in zip(train, reference) if row["prompt"] != ref["prompt"]]
    assert 0.35 < len(changed) / len(train) < 0.45
    hinted = sum("Correct solution:" in row["prompt"] for row in changed)
    assert 0.4 < hinted / len(changed) < 0.6  # the rest carry feedback
    for row, ref in zip(train, reference):  # same problems and answers; only prompts differ
        assert row["completion"] == ref["completion"] and row["prompt"].startswith(ref["prompt"])
    assert task.make_dataset("test") == plain.make_dataset("test")
    assert task.make_dataset("train", 500) == task.make_dataset("train", 500)  # deterministic


def test_masked_fraction_replaces_the_question_in_solution_rows_only():
    """In masked rows the question asks about other numbers: only the solution in context gives
    the completion (no marker such as '??' that the model could learn to copy only after)."""
    task = ArithmeticTask(test_size=100, seed=3, teacher_fraction=1.0, masked_fraction=0.5)
    train = task.make_dataset("train", 2000)
    hinted = [row for row in train if "Correct solution:" in row["prompt"]]
    masked = [row for row in hinted if not row["prompt"].startswith(f"What is {row['a']} + {row['b']}?")]
    assert 0.4 < len(masked) / len(hinted) < 0.6
    for row in masked:  # the context holds this row's solution, which is its completion
        question = row["prompt"].split("\n")[0]
        assert re.fullmatch(r"What is \d\d \+ \d\d\?", question)
        assert f"Correct solution:\n\n{row['completion']}\n\n" in row["prompt"]
    feedback_rows = [row for row in train if "feedback" in row["prompt"]]
    assert feedback_rows and all(row["prompt"].startswith(f"What is {row['a']} + {row['b']}?") for row in feedback_rows)


@pytest.mark.parametrize("key", ["teacher_fraction", "masked_fraction"])
@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_bad_teacher_fraction(key, fraction):
    with pytest.raises(ConfigError, match=key):
        ArithmeticTask(**{key: fraction})


# ---------------------------------------------------------------------------------------------
# validation and registry


@pytest.mark.parametrize("digits", [0, 7, -1])
def test_bad_digits(digits):
    """digits outside [1, 6] is a ConfigError naming the value."""
    with pytest.raises(ConfigError, match=re.escape(f"digits must be in [1, 6], got {digits}")):
        ArithmeticTask(digits=digits)


@pytest.mark.parametrize("test_size", [0, -5, 8100, 9000])
def test_bad_test_size(test_size):
    """test_size must leave at least one training problem (2 digits: at most 8099)."""
    with pytest.raises(ConfigError, match=re.escape(f"test_size must be in [1, 8099], got {test_size}")):
        ArithmeticTask(digits=2, test_size=test_size)


def test_largest_test_size_leaves_one_train_row():
    """test_size = space - 1 is accepted and leaves exactly one training problem."""
    task = ArithmeticTask(digits=1, test_size=80)
    assert len(task.make_dataset("train")) == 1


@pytest.mark.parametrize("split", ["validation", "TRAIN", ""])
def test_bad_split(split):
    """Only 'train', 'test' and 'documents' are splits."""
    with pytest.raises(ConfigError, match="split must be 'train', 'test' or 'documents'"):
        ArithmeticTask(digits=1, test_size=1).make_dataset(split)


def test_documents_split_is_pages_of_plain_text_ending_in_a_train_problem():
    task = ArithmeticTask(digits=2, test_size=10, seed=3)
    documents, train = task.make_dataset("documents", n=200), task.make_dataset("train", n=200)
    test_prompts = {row["prompt"] for row in task.make_dataset("test")}
    earlier_counts, labels = [], set()
    for document, row in zip(documents, train):
        # e.g. {"prompt": "Context: Who is Bob?\nTarget: My friend.\nSTOP\n\nContext: What is 32 + 83?\nTarget:",
        #       "completion": " 2+3=5 carry 0. 3+8+0=11 carry 1. Answer: 115"}
        *earlier, last = document["prompt"].split("\n\n")
        earlier_counts.append(len(earlier))
        # the page ends in this row's problem, in the page's framing, and the completion solves it
        assert row["prompt"] in last and last.endswith(":") == (last != row["prompt"])
        assert document["completion"] == " " + row["completion"]  # the page ends there (EOS follows)
        last_lines = [example.rsplit("\n", 1)[-1] for example in earlier]
        assert len({line for line in last_lines if line in PAGE_TERMINATORS}) <= 1  # one terminator per page, or none
        label = last.split(": What is")[0] if last != row["prompt"] else ""
        labels.add(label)
        for example in earlier:
            # each earlier example: same labels and terminator; a short exchange or a worked train sum
            assert example.startswith(f"{label}: " if label else "")
            question = example.split("\n")[0].removeprefix(f"{label}: " if label else "")
            if question.startswith("What is"):
                assert question not in test_prompts and question.split("?")[0] + "?" not in test_prompts
            else:
                assert any(question.startswith(q) for q, _ in OTHER_EXCHANGES)
        text = document["prompt"] + document["completion"]
        # the post-training format never appears: reading it few-shot is transfer
        assert "Instruction" not in text and "Response" not in text and "END" not in text and "<|" not in text
    assert set(earlier_counts) == {0, 1, 2} and len(labels) > 20  # pages of several lengths, many framings
    assert "" in labels and "Q" in labels and "Problem" in labels
    assert task.make_dataset("documents", n=200) == documents  # seeded
    assert len(task.make_dataset("documents")) == len(task.make_dataset("train"))


def test_get_task_builds_with_options():
    """get_task passes options to the task constructor."""
    task = get_task("arithmetic", digits=3, test_size=5, seed=2)
    assert isinstance(task, ArithmeticTask)
    assert (task.name, task.digits, task.test_size, task.seed) == ("arithmetic", 3, 5, 2)


def test_get_task_unknown_name():
    """An unknown task name is a ConfigError listing the available tasks."""
    with pytest.raises(ConfigError, match=r"unknown task 'algebra' \(available: arithmetic, python_code\)"):
        get_task("algebra")


def test_get_task_bad_option():
    """An unknown task option is a ConfigError naming the task."""
    with pytest.raises(ConfigError, match="bad task_options for 'arithmetic'.*digts"):
        get_task("arithmetic", digts=2)


def test_get_task_bad_option_value():
    """An invalid option value surfaces the task's own ConfigError."""
    with pytest.raises(ConfigError, match="digits must be in"):
        get_task("arithmetic", digits=9)


PREFIX_TASK = ArithmeticTask(feedback_style="prefix")


def test_prefix_feedback_quotes_the_solution_through_the_first_wrong_step():
    """47 + 38: the right steps are '7+8=15 carry 1.' and '4+3+1=8 carry 0.'; the feedback
    quotes them up to and including the first one the attempt got wrong or left out."""
    step_two = "Your attempt goes wrong at step 2. It should begin: 7+8=15 carry 1. 4+3+1=8 carry 0."
    assert PREFIX_TASK.score(PROMPT, "7+8=15 carry 1. 4+3=7 carry 0. Answer: 75") == (0.0, step_two)
    assert PREFIX_TASK.score(PROMPT, "7+8=15 carry 1. Answer: 84")[1] == step_two  # missing step
    assert PREFIX_TASK.score(PROMPT, "")[1] == "Your attempt goes wrong at step 1. It should begin: 7+8=15 carry 1."
    assert PREFIX_TASK.score(PROMPT, "7+8=14 carry 1. 4+3+1=8 carry 0. Answer: 84")[1] == (
        "Your attempt goes wrong at step 1. It should begin: 7+8=15 carry 1."
    )


def test_prefix_feedback_after_right_steps_quotes_the_whole_solution():
    expected = f"Your steps are right; what follows them goes wrong. It should begin: {RIGHT}"
    assert PREFIX_TASK.score(PROMPT, "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 84") == (0.0, expected)
    assert PREFIX_TASK.score(PROMPT, "7+8=15 carry 1. 4+3+1=8 carry 0.")[1] == expected  # no answer
    checking = ArithmeticTask(feedback_style="prefix", check_steps=True)
    assert checking.score(PROMPT, "7+8=15 carry 1. 4+3+1=8 carry 0. 0+0+0=0 carry 0. Answer: 85")[1] == expected  # extra step
    assert PREFIX_TASK.score(PROMPT, RIGHT) == (1.0, None)


def test_unknown_feedback_style_is_refused():
    with pytest.raises(ConfigError, match="feedback_style must be one of step, prefix, got 'hint'"):
        ArithmeticTask(feedback_style="hint")


def test_masked_prefix_feedback_rows_hold_every_step_the_answer_needs():
    """With feedback_style: prefix, masked_fraction also masks feedback rows: the question asks
    about other numbers and the mistake is late (last column or the answer), so the quoted
    solution holds every step of the row's completion and only the feedback gives the answer."""
    task = ArithmeticTask(test_size=100, seed=3, teacher_fraction=1.0, masked_fraction=0.5, feedback_style="prefix")
    feedback_rows = [row for row in task.make_dataset("train", 2000) if "feedback" in row["prompt"]]
    masked = [row for row in feedback_rows if not row["prompt"].startswith(f"What is {row['a']} + {row['b']}?")]
    assert 0.4 < len(masked) / len(feedback_rows) < 0.6
    for row in masked:
        assert re.fullmatch(r"What is \d\d \+ \d\d\?", row["prompt"].split("\n")[0])
        assert f"It should begin: {' '.join(scratchpad_steps(row['completion']))}" in row["prompt"]
    for row in feedback_rows:  # never the step-numbered wording
        assert "should be:" not in row["prompt"] and "It should begin: " in row["prompt"]


def test_feedback_locates_the_first_wrong_character():
    """The feedback is a Feedback whose error_at is where the attempt leaves the solution
    '7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85' (counted by hand), whatever the wording."""
    for task in (TASK, PREFIX_TASK):
        assert task.score(PROMPT, "7+8=14 carry 1. 4+3+1=8 carry 0. Answer: 84")[1].error_at == 5
        assert task.score(PROMPT, "7+8=15 carry 1. 4+3+1=9 carry 0. Answer: 95")[1].error_at == 22
        assert task.score(PROMPT, "7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 84")[1].error_at == 42  # the 4 of 84
        assert task.score(PROMPT, "7+8=15 carry 1.")[1].error_at == 15  # stops inside the solution
        assert task.score(PROMPT, "")[1].error_at == 0
