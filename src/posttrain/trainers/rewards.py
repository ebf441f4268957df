"""Reward functions for on-policy RL (GRPO, SDPO) that may also return feedback.

TRL's GRPOTrainer calls ``reward_func(prompts=..., completions=..., completion_ids=..., **columns)``
and expects one float per completion. SDPO also wants to know *why* a completion failed, so a
posttrain reward function may return, per completion, either a float or ``(reward, feedback)``.
:class:`FeedbackReward` adapts such a function to TRL: it hands TRL the floats, checks them
(count, finiteness) and keeps the feedback strings of the last call, in sample order, for the
trainer to put into each sample's teacher prompt.

:class:`TaskReward` is the reward of a built-in task (``task:arithmetic``, ``task:python_code``):
its verifier's score, and its feedback for wrong answers.
"""

from __future__ import annotations

import importlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from trl.trainer.utils import get_callable_name, is_async_callable

from posttrain.data.chat import message_text
from posttrain.errors import ConfigError, PosttrainError
from posttrain.tasks import Task

# Keyword arguments TRL adds to every reward call that are not per-sample dataset columns
TRL_CONTROL_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments", "completion_ids")


class FeedbackReward:
    """Wraps a reward function returning floats or ``(reward, feedback)`` for TRL.

    After each call, ``last_feedback`` holds one ``str | None`` per completion. Every reward must
    be a finite number (``None``, which TRL reads as "does not apply", is refused: SDPO decides
    successes from the rewards). :func:`feedback_reward` picks the async variant for async
    functions, so TRL still runs those concurrently.
    """

    def __init__(self, function: Callable[..., Any], name: str | None = None):
        self.function = function
        self.__name__ = name or get_callable_name(function)
        self.last_feedback: list[str | None] = []

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return self._accept(self.function(prompts=prompts, completions=completions, **kwargs), len(completions))

    def _accept(self, outputs, expected: int) -> list[float]:
        """Check the outputs, keep the feedback, return the rewards."""
        outputs = list(outputs)
        if len(outputs) != expected:
            raise PosttrainError(f"reward function '{self.__name__}' returned {len(outputs)} values for {expected} completions")
        rewards, feedback = [], []
        for i, output in enumerate(outputs):
            if isinstance(output, tuple) and len(output) != 2:
                raise PosttrainError(
                    f"reward function '{self.__name__}' returned a {len(output)}-tuple for completion {i}: expected (reward, feedback)"
                )
            reward, text = output if isinstance(output, tuple) else (output, None)
            try:
                reward = float(reward)
            except (TypeError, ValueError):
                raise PosttrainError(
                    f"reward function '{self.__name__}' returned {output!r} for completion {i}: expected a number "
                    "or (number, feedback)"
                ) from None
            if not math.isfinite(reward):
                raise PosttrainError(f"reward function '{self.__name__}' returned {reward} for completion {i}")
            if text is not None and not isinstance(text, str):
                raise PosttrainError(f"reward function '{self.__name__}' returned non-string feedback {text!r} for completion {i}")
            rewards.append(reward)
            feedback.append(text or None)
        self.last_feedback = feedback
        return rewards


class AsyncFeedbackReward(FeedbackReward):
    """:class:`FeedbackReward` for ``async def`` reward functions."""

    async def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return self._accept(await self.function(prompts=prompts, completions=completions, **kwargs), len(completions))


def feedback_reward(function: Callable[..., Any]) -> FeedbackReward:
    """The right wrapper for ``function`` (sync or async)."""
    return AsyncFeedbackReward(function) if is_async_callable(function) else FeedbackReward(function)


class TaskReward:
    """A task's verifier as a reward function: ``(score, feedback)`` per completion.

    Scoring runs in a thread pool: the code task waits on sandboxed subprocesses, and the
    arithmetic task is cheap either way.
    """

    def __init__(self, task: Task, workers: int = 4):
        self.task, self.workers = task, workers
        self.__name__ = f"{task.name}_verifier"

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[tuple[float, str | None]]:
        rows = [
            {key: values[i] for key, values in columns.items() if key not in TRL_CONTROL_KWARGS and isinstance(values, list)}
            for i in range(len(completions))
        ]

        def score(i: int) -> tuple[float, str | None]:
            return self.task.score(message_text(prompts[i]), message_text(completions[i]), **rows[i])

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(score, range(len(completions))))


def import_reward_function(path: str) -> Callable[..., list]:
    """``"package.module:function"`` -> the function (a clear error when it is not there)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"reward function '{path}' must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"reward function '{path}': cannot import {module_name} ({err})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(f"reward function '{path}': {module_name} has no function '{attribute}'")
    return function
