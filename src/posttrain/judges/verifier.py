"""The exact judge: a task's own checker (arithmetic now; code tests once the sandbox exists)."""

from __future__ import annotations

from posttrain.judges.base import Judge
from posttrain.tasks import Task


class VerifierJudge(Judge):
    """Scores a completion with the task's verifier: its reward (1.0 right, 0.0 wrong)."""

    name = "verifier"

    def __init__(self, task: Task):
        self.task = task

    def score(self, prompt: str, completion: str, /, **row) -> float:
        reward, _ = self.task.score(prompt, completion, **row)
        return reward
