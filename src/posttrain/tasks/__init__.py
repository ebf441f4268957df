"""Tasks: a dataset generator plus a scorer, the interface RL and evaluation plug into.

A task makes rows ``{"prompt", "completion", "answer", ...}`` for a split and scores a model's
completion with ``score(prompt, completion, **row) -> (reward, feedback)``, where ``feedback`` is
a string saying what was wrong (``None`` when the completion is right), or a :class:`Feedback`,
which also says where the completion first goes wrong.

Beside the tasks: :mod:`posttrain.tasks.sources` (rows from a task, a file or the Hub) and
:mod:`posttrain.tasks.sandbox` (where the code task runs programs).
"""

from __future__ import annotations

from typing import Protocol

from posttrain.errors import ConfigError


class Feedback(str):
    """Feedback text that also locates the completion's first error: ``error_at``, the offset of
    its first wrong character (SDPO's ``distillation_span: to_divergence`` distils the tokens up to
    and including the one there). A plain ``str`` everywhere else (files, prompts, comparisons)."""

    error_at: int

    def __new__(cls, text: str, error_at: int):
        feedback = super().__new__(cls, text)
        feedback.error_at = error_at
        return feedback

    def __reduce__(self):  # kept across processes (gather_object pickles it)
        return Feedback, (str(self), self.error_at)


class Task(Protocol):
    name: str

    def make_dataset(self, split: str, n: int | None = None) -> list[dict]:
        """Rows for ``split`` ("train" or "test"), each with prompt, completion and answer."""
        ...

    def score(self, prompt: str, completion: str, /, **row) -> tuple[float, str | None]:
        """Reward in [0, 1] and feedback (a ``str`` or :class:`Feedback`) for a wrong completion."""
        ...

    def make_pairs(self, split: str, n: int | None = None) -> list[dict]:
        """Preference pairs for ``split``: a verified-correct ``chosen`` and a wrong ``rejected``."""
        ...

    def hinted_prompt(self, row: dict) -> str:
        """The prompt with a correct solution in context (for in-context teachers)."""
        ...


def get_task(name: str, **options) -> Task:
    """Build a task by name; ``options`` are the task's constructor arguments."""
    from posttrain.tasks.arithmetic import ArithmeticTask
    from posttrain.tasks.python_code import PythonCodeTask

    registry = {"arithmetic": ArithmeticTask, "python_code": PythonCodeTask}
    if name not in registry:
        raise ConfigError(f"unknown task '{name}' (available: {', '.join(registry)})")
    try:
        return registry[name](**options)
    except TypeError as err:
        raise ConfigError(f"bad task_options for '{name}': {err}") from None
