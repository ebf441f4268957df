"""Build a judge by name from the judge_* keys of a config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from posttrain.config import config_field
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


@dataclass
class JudgeArguments:
    """The judge_* config keys of every command that asks a judge (``pairs``, ``eval``): one
    definition, so that a judge is set up the same way wherever it is used."""

    judge_model: str | None = config_field(None, help="Judge model: a reward model or causal LM directory/hub id, or the API's model name.")
    judge_base_model_mode: bool = config_field(
        False, help="logprob_ab: the judge LM is a base model, asked in the Instruction/Response format (no chat template)."
    )
    judge_base_url: str | None = config_field(None, help="openai: the OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")
    judge_api_key_env: str = config_field("OPENAI_API_KEY", help="openai: environment variable holding the API key (never logged).")
    judge_cache_dir: str | None = config_field(None, help="openai: on-disk cache of API replies (default: <output_dir>/judge_cache).")
    judge_timeout: float = config_field(30.0, help="openai: seconds to wait for each HTTP request.", gt=0)
    judge_max_retries: int = config_field(5, help="openai: failed attempts (429, 5xx, timeouts) a request may use up.", ge=1)
    judge_backoff: float = config_field(1.0, help="openai: wait after the n-th failure is backoff * 2**n s (or the server's Retry-After).", ge=0)

    def build_judge(self, name: str, output_dir: str, task: str = "arithmetic", task_options: dict | None = None) -> Judge:
        """The judge ``name`` set up from these keys; an API judge caches under ``output_dir``."""
        return build_judge(
            name, task=task, task_options=task_options, model=self.judge_model, base_model_mode=self.judge_base_model_mode,
            base_url=self.judge_base_url, api_key_env=self.judge_api_key_env,
            cache_dir=self.judge_cache_dir or str(Path(output_dir) / "judge_cache"),
            timeout=self.judge_timeout, max_retries=self.judge_max_retries, backoff=self.judge_backoff,
        )
