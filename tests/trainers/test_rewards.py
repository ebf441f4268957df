"""Reward functions with feedback for GRPO/SDPO: FeedbackReward, TaskReward, import_reward_function."""

import functools
import math
import operator

import pytest
from trl.trainer.utils import get_callable_name

from posttrain.data.chat import message_text
from posttrain.errors import ConfigError, PosttrainError
from posttrain.tasks import get_task
from posttrain.tasks.arithmetic import solve
from posttrain.trainers.rewards import (
    FeedbackReward,
    TaskReward,
    import_reward_function,
)


def returning(outputs):
    """A reward function that returns ``outputs`` whatever it is given (and records its calls)."""

    def scored(prompts, completions, **kwargs):
        scored.calls.append({"prompts": prompts, "completions": completions, **kwargs})
        return outputs

    scored.calls = []
    return scored


def call(reward, n):
    return reward(prompts=[f"p{i}" for i in range(n)], completions=[f"c{i}" for i in range(n)])


# -- FeedbackReward: what TRL gets, what SDPO keeps ------------------------------------------


def test_plain_floats_pass_through_without_feedback():
    reward = FeedbackReward(returning([0.5, 1, 0.0, -2]))
    rewards = call(reward, 4)
    assert rewards == [0.5, 1.0, 0.0, -2.0]
    assert all(type(r) is float for r in rewards)
    assert reward.last_feedback == [None, None, None, None]


def test_tuples_split_into_rewards_and_feedback():
    reward = FeedbackReward(returning([(1.0, None), (0.0, "carry dropped"), (0.25, "close")]))
    assert call(reward, 3) == [1.0, 0.0, 0.25]
    assert reward.last_feedback == [None, "carry dropped", "close"]


def test_mixed_floats_and_tuples_keep_sample_order():
    reward = FeedbackReward(returning([0.25, (0.0, "second"), 1, (1, ""), (0.0, "fifth")]))
    assert call(reward, 5) == [0.25, 0.0, 1.0, 1.0, 0.0]
    assert reward.last_feedback == [None, "second", None, None, "fifth"]  # empty feedback counts as none


def test_last_feedback_is_replaced_by_each_call():
    outputs = [(0.0, "a0"), (0.0, "a1")]
    reward = FeedbackReward(returning(outputs))
    call(reward, 2)
    assert reward.last_feedback == ["a0", "a1"]
    outputs[:] = [(1.0, None), (0.0, "b1")]
    call(reward, 2)
    assert reward.last_feedback == [None, "b1"]


def test_arguments_reach_the_wrapped_function():
    inner = returning([1.0, 0.0])
    FeedbackReward(inner)(prompts=["p0", "p1"], completions=["c0", "c1"], answer=[3, 4], completion_ids=[[1], [2]])
    assert inner.calls == [{"prompts": ["p0", "p1"], "completions": ["c0", "c1"], "answer": [3, 4], "completion_ids": [[1], [2]]}]


def test_generator_output_is_accepted():
    def lazy(prompts, completions, **kwargs):
        return (float(i) for i in range(len(completions)))

    assert call(FeedbackReward(lazy), 3) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("outputs", [[1.0, 0.0], [1.0, 0.0, 1.0, 0.0], []])
def test_wrong_count_names_the_function(outputs):
    def my_verifier(prompts, completions, **kwargs):
        return outputs

    with pytest.raises(PosttrainError, match=rf"reward function 'my_verifier' returned {len(outputs)} values for 3 completions"):
        call(FeedbackReward(my_verifier), 3)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, (math.nan, "feedback"), "nan"])
def test_non_finite_rewards_are_refused(bad):
    with pytest.raises(PosttrainError, match=r"reward function 'scored' returned .*for completion 1"):
        call(FeedbackReward(returning([0.0, bad])), 2)


@pytest.mark.parametrize("bad", ["high", None, [1.0], {"reward": 1.0}, ("high", "feedback"), (None, "feedback")])
def test_non_numeric_rewards_are_refused(bad):
    with pytest.raises(PosttrainError, match=r"reward function 'scored' returned .* for completion 1: expected a number"):
        call(FeedbackReward(returning([1.0, bad])), 2)


@pytest.mark.parametrize("feedback", [3, b"bytes", ["a list"], {"why": "x"}])
def test_non_string_feedback_is_refused(feedback):
    with pytest.raises(PosttrainError, match=r"reward function 'scored' returned non-string feedback .* for completion 0"):
        call(FeedbackReward(returning([(0.0, feedback), 1.0])), 2)


@pytest.mark.parametrize("bad", [(1.0,), (1.0, "feedback", "extra")])
def test_tuples_of_the_wrong_length_are_a_clear_error(bad):
    with pytest.raises(PosttrainError, match=r"reward function 'scored'"):
        call(FeedbackReward(returning([bad])), 1)


def test_failed_call_keeps_no_partial_feedback():
    reward = FeedbackReward(returning([(0.0, "ok0"), (0.0, "ok1")]))
    call(reward, 2)
    reward.function = returning([(0.0, "new"), math.nan])
    with pytest.raises(PosttrainError):
        call(reward, 2)
    assert reward.last_feedback == ["ok0", "ok1"]  # the failed call did not half-overwrite it


# -- names, as TRL logs them (rewards/<name>/mean) ----------------------------------------------


def correctness(prompts, completions, **kwargs):
    return [1.0 for _ in completions]


class LengthPenalty:
    def __call__(self, prompts, completions, **kwargs):
        return [0.0 for _ in completions]


def test_name_is_what_trl_would_call_the_function():
    assert FeedbackReward(correctness).__name__ == "correctness"
    assert get_callable_name(FeedbackReward(correctness)) == get_callable_name(correctness) == "correctness"
    assert get_callable_name(FeedbackReward(LengthPenalty())) == get_callable_name(LengthPenalty()) == "LengthPenalty"
    assert get_callable_name(FeedbackReward(correctness, name="custom")) == "custom"
    task_reward = TaskReward(get_task("arithmetic"))
    assert get_callable_name(FeedbackReward(task_reward)) == "arithmetic_verifier"


def test_partial_is_named_like_trl_names_it():
    partial = functools.partial(correctness, scale=2)
    assert get_callable_name(FeedbackReward(partial)) == get_callable_name(partial) == "correctness"


# -- TaskReward: the built-in task's verifier --------------------------------------------------


@pytest.fixture(scope="module")
def arithmetic():
    return TaskReward(get_task("arithmetic"))


def test_task_reward_scores_the_scratchpad(arithmetic):
    right, wrong = solve(47, 38, 2), solve(47, 38, 2).replace("Answer: 85", "Answer: 84")
    scores = arithmetic(prompts=["What is 47 + 38?"] * 3, completions=[right, wrong, "no idea"])
    assert scores[0] == (1.0, None)
    assert scores[1][0] == 0.0 and isinstance(scores[1][1], str) and scores[1][1]
    assert scores[2] == (0.0, "Step 1 is missing. Step 1 should be: 7+8=15 carry 1.")


def test_task_reward_reads_chat_messages(arithmetic):
    prompts = [[{"role": "system", "content": "Be exact."}, {"role": "user", "content": "What is 12 + 34?"}]] * 2
    completions = [[{"role": "assistant", "content": solve(12, 34, 2)}], [{"role": "assistant", "content": "Answer: 47"}]]
    scores = arithmetic(prompts=prompts, completions=completions)
    assert scores[0] == (1.0, None)
    assert scores[1] == (0.0, "Step 1 is missing. Step 1 should be: 2+4=6 carry 0.")


def test_task_reward_routes_each_rows_columns_to_its_sample(arithmetic):
    """Every prompt says 11 + 11; the per-row a/b columns decide, sample by sample, in order."""
    pairs = [(10 + i, 50 + 2 * i) for i in range(12)]
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    completions = [solve(x, y, 2) if i % 3 else solve(11, 11, 2) for i, (x, y) in enumerate(pairs)]
    scores = arithmetic(prompts=["What is 11 + 11?"] * 12, completions=completions, a=a, b=b, answer=[x + y for x, y in pairs])
    assert [s[0] for s in scores] == [0.0 if i % 3 == 0 else 1.0 for i in range(12)]
    shifted = arithmetic(prompts=["What is 11 + 11?"] * 12, completions=completions[1:] + completions[:1], a=a, b=b)
    assert [s[0] for s in shifted] == [0.0] * 12


class RecordingTask:
    name = "recording"

    def __init__(self):
        self.calls = []

    def score(self, prompt, completion, /, **row):
        self.calls.append((prompt, completion, row))
        return 1.0, None


def test_task_reward_passes_only_dataset_columns():
    task = RecordingTask()
    reward = TaskReward(task, workers=2)
    columns = {"a": [1, 2, 3], "answer": [10, 20, 30]}
    control = {
        "trainer_state": object(),
        "log_extra": lambda column, values: None,
        "log_metric": lambda name, value: None,
        "completion_ids": [[5], [6, 7], [8]],
        "environments": None,
    }
    scores = reward(prompts=[[{"role": "user", "content": f"q{i}"}] for i in range(3)], completions=["x", "y", "z"], **columns, **control)
    assert scores == [(1.0, None)] * 3
    assert sorted(task.calls) == [("q0", "x", {"a": 1, "answer": 10}), ("q1", "y", {"a": 2, "answer": 20}), ("q2", "z", {"a": 3, "answer": 30})]
    assert reward.__name__ == "recording_verifier"


# -- import_reward_function ----------------------------------------------------------------------


def test_import_reward_function_resolves_module_and_attribute():
    assert import_reward_function("operator:add") is operator.add
    assert import_reward_function("posttrain.data.chat:message_text") is message_text


@pytest.mark.parametrize(
    "path, message",
    [
        ("operator", "must look like 'package.module:function'"),
        ("operator.add", "must look like 'package.module:function'"),
        (":add", "must look like 'package.module:function'"),
        ("operator:", "must look like 'package.module:function'"),
        ("no_such_module_for_posttrain_tests:f", "cannot import no_such_module_for_posttrain_tests"),
        ("posttrain.no_such_submodule:f", "cannot import posttrain.no_such_submodule"),
        ("operator:no_such_function", "operator has no function 'no_such_function'"),
        ("os:sep", "os has no function 'sep'"),  # there, but not callable
    ],
)
def test_import_reward_function_bad_paths(path, message):
    with pytest.raises(ConfigError, match=message):
        import_reward_function(path)

