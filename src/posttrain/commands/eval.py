"""``posttrain eval``: accuracy of a model on a task's test split.

Greedy accuracy (one deterministic completion per problem), format compliance of the greedy
completions and, optionally, pass@k from ``num_samples`` sampled completions per problem with the
unbiased estimator of Chen et al. (2021) (both measures in :mod:`posttrain.evaluation.accuracy`).
Writes ``eval.json`` (the numbers) and ``predictions.jsonl`` (every completion with its reward and
feedback) to ``output_dir``.

``premise_check`` measures SDPO's premise (Hübotter et al. 2026): the model, shown a correct
solution or the verifier's feedback in its prompt, in the exact words SDPO's teacher sees, must
solve more problems than with the plain prompt, or a self-teacher has nothing to teach. Greedy
accuracy under the three contexts goes to ``premise/plain``, ``premise/demonstration`` and
``premise/feedback`` (the feedback is on a typical wrong attempt, for tasks that make one).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from posttrain.artifacts import write_json
from posttrain.config import config_field
from posttrain.data.base_format import END
from posttrain.data.jsonl import write_jsonl
from posttrain.errors import ConfigError
from posttrain.evaluation.accuracy import follows_format, pass_at_k
from posttrain.generation.few_shot import few_shot_prompt
from posttrain.generation.sampling import cut_at_stop, generate
from posttrain.models import ModelArguments, free_model, load_model, load_tokenizer, render_prompt
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks import get_task

log = get_logger(__name__)


@dataclass
class EvalConfig(ModelArguments):
    output_dir: str = config_field("runs/eval", help="Where eval.json and predictions.jsonl go.")
    task: str = config_field("arithmetic", help="Built-in task to evaluate on.")
    task_options: dict = config_field({}, help="Task options (must match those used for training).")
    split: str = config_field("test", help="Task split to evaluate.")
    num_examples: int | None = config_field(None, help="Evaluate the first N problems (None: all).", ge=1)
    batch_size: int = config_field(64, help="Prompts per generate call.", ge=1)
    max_new_tokens: int = config_field(64, help="Generation budget per completion.", ge=1)
    num_samples: int = config_field(0, help="Sampled completions per problem for pass@k (0: greedy only).", ge=0)
    pass_k: list[int] = config_field([1], help="k values for pass@k (each <= num_samples).")
    temperature: float = config_field(1.0, help="Sampling temperature for pass@k.", gt=0)
    top_p: float = config_field(1.0, help="Nucleus sampling for pass@k.", gt=0, le=1)
    seed: int = config_field(0, help="Sampling seed.")
    premise_check: bool = config_field(
        False, help="Also greedy accuracy with a correct solution / the verifier's feedback in the prompt (SDPO's teacher contexts)."
    )
    few_shot: int = config_field(
        0, help="Base-model mode: Instruction/Response/END examples (the rollouts' varied pool) before each prompt; 0: zero-shot.", ge=0, le=4
    )

    def __post_init__(self):
        if self.premise_check and self.base_model_mode:
            raise ConfigError("config key 'premise_check': SDPO's teacher contexts are chat prompts; it needs a chat model")
        if self.few_shot and not self.base_model_mode:
            raise ConfigError("config key 'few_shot': few-shot prompts are for base models; set base_model_mode: true")
        if self.num_samples and any(not isinstance(k, int) or not 1 <= k <= self.num_samples for k in self.pass_k):
            raise ConfigError(f"config key 'pass_k': every k must be an integer in [1, num_samples={self.num_samples}]")


def _score_all(task, rows: list[dict], completions: list[str]) -> list[tuple[float, str | None]]:
    return [task.score(row["prompt"], text, **row) for row, text in zip(rows, completions)]


def _premise_check(model, tokenizer, task, rows: list[dict], config: EvalConfig) -> dict[str, float]:
    """Greedy accuracy with the plain prompt, a correct solution in context and feedback on a
    wrong attempt in context (the teacher prompts of SDPO's reprompting)."""
    rng = random.Random(config.seed)
    contexts = {"plain": [row["prompt"] for row in rows], "demonstration": [task.hinted_prompt(row) for row in rows]}
    if hasattr(task, "feedback_prompt"):
        contexts["feedback"] = [task.feedback_prompt(row, rng) for row in rows]
    result = {}
    for name, prompts in contexts.items():
        rendered = [render_prompt(tokenizer, prompt, False) for prompt in prompts]
        texts = generate(model, tokenizer, rendered, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
                         desc=f"premise: {name}")
        result[f"premise/{name}"] = sum(reward for reward, _ in _score_all(task, rows, [t[0] for t in texts])) / len(rows)
    log.info("premise check (greedy accuracy): " + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in result.items()))
    return result


def run_eval(config: EvalConfig) -> dict:
    """Evaluate one model, free it, write the artifacts, return the metrics."""
    seed_everything(config.seed)
    task = get_task(config.task, **config.task_options)
    rows = task.make_dataset(config.split, n=config.num_examples)
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    stop = [END] if config.base_model_mode else None
    if config.few_shot:
        rng = random.Random(config.seed)  # draws the examples, in prompt order
        prompts = [few_shot_prompt(row["prompt"], rng, config.few_shot) for row in rows]
        stop.append("\nInstruction:")  # a base model that does not close with END writes the next example next
    else:
        prompts = [render_prompt(tokenizer, row["prompt"], config.base_model_mode) for row in rows]
    device = "cuda" if torch.cuda.is_available() else "cpu"

    model = load_model(config.model_name_or_path, config.dtype, config.trust_remote_code, device=device)
    try:
        # stop strings kept for the compliance check; one completion (and its token count) per prompt
        raw_groups, count_groups = generate(
            model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
            stop_strings=stop, desc="greedy", return_token_counts=True, keep_stop_strings=True,
        )
        premise = _premise_check(model, tokenizer, task, rows, config) if config.premise_check else {}
        sampled = []
        if config.num_samples:
            sampled = generate(model, tokenizer, prompts, num_return_sequences=config.num_samples, do_sample=True,
                               temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                               batch_size=max(1, config.batch_size // config.num_samples), stop_strings=stop, desc="sampling")
    finally:
        free_model(model)

    raw = [group[0] for group in raw_groups]
    formatted = [follows_format(text, counts[0], config.max_new_tokens, config.base_model_mode)
                 for text, counts in zip(raw, count_groups)]
    greedy = [cut_at_stop(text, stop) for text in raw]
    scores = _score_all(task, rows, greedy)
    metrics = {
        "model": config.model_name_or_path,
        "task": config.task,
        "split": config.split,
        "num_examples": len(rows),
        "accuracy": sum(reward for reward, _ in scores) / len(rows),
        "format_compliance": sum(formatted) / len(rows),
        **premise,
    }
    predictions = [
        {"prompt": row["prompt"], "completion": text, "reward": reward, "feedback": feedback, "answer": row.get("answer"),
         "follows_format": ok}
        for row, text, (reward, feedback), ok in zip(rows, greedy, scores, formatted)
    ]
    if sampled:
        correct = [sum(r >= 1.0 for r, _ in _score_all(task, [row] * len(samples), samples)) for row, samples in zip(rows, sampled)]
        for k in config.pass_k:
            metrics[f"pass@{k}"] = sum(pass_at_k(config.num_samples, c, k) for c in correct) / len(rows)
        metrics["num_samples"] = config.num_samples
        metrics["temperature"] = config.temperature
    out = Path(config.output_dir)
    write_jsonl(out / "predictions.jsonl", predictions)
    write_json(out / "eval.json", metrics)
    log.info("eval: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics
