"""Build a judge by name from the judge_* keys of a config."""

from __future__ import annotations

from typing import Literal, get_args

from posttrain.errors import ConfigError
from posttrain.judges.base import Judge

# A Literal so that a config's judge key is checked by the config loader, before anything loads.
JudgeName = Literal["verifier", "reward_model", "logprob_ab", "openai"]
JUDGES = get_args(JudgeName)


def build_judge(
    name: str,
    *,
    task: str = "arithmetic",
    task_options: dict | None = None,
    model: str | None = None,
    base_model_mode: bool = False,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    cache_dir: str | None = None,
    timeout: float = 30.0,
    max_retries: int = 5,
    backoff: float = 1.0,
) -> Judge:
    if name == "verifier":
        from posttrain.judges.verifier import VerifierJudge
        from posttrain.tasks import get_task

        return VerifierJudge(get_task(task, **(task_options or {})))
    if name in ("reward_model", "logprob_ab") and not model:
        raise ConfigError(f"judge '{name}' needs judge_model (a model directory or hub id)")
    if name == "reward_model":
        from posttrain.judges.reward_model import RewardModelJudge

        return RewardModelJudge(model)
    if name == "logprob_ab":
        from posttrain.judges.logprob_ab import LogProbABJudge

        return LogProbABJudge(model, base_model_mode=base_model_mode)
    if name == "openai":
        if not (base_url and model):
            raise ConfigError("judge 'openai' needs judge_base_url and judge_model")
        from posttrain.judges.openai import OpenAIJudge

        return OpenAIJudge(base_url=base_url, model=model, api_key_env=api_key_env, cache_dir=cache_dir,
                           timeout=timeout, max_retries=max_retries, backoff=backoff)
    raise ConfigError(f"unknown judge '{name}' (available: {', '.join(JUDGES)})")
