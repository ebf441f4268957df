"""``posttrain eval``: how good a model is, on a task's test split or on the user's own JSONL.

On a task: greedy accuracy (one deterministic completion per problem), format compliance of the greedy
completions and, optionally, pass@k from ``num_samples`` sampled completions per problem with the
unbiased estimator of Chen et al. (2021) (both measures in :mod:`posttrain.evaluation.accuracy`).
Writes ``eval.json`` (the numbers) and ``predictions.jsonl`` (every completion with its reward and
feedback) to ``output_dir``.

``premise_check`` measures SDPO's premise (Hübotter et al. 2026): the model, shown a correct
solution or the verifier's feedback in its prompt, in the exact words SDPO's teacher sees, must
solve more problems than with the plain prompt, or a self-teacher has nothing to teach. Greedy
accuracy under the three contexts goes to ``premise/plain``, ``premise/demonstration`` and
``premise/feedback`` (the feedback is on a typical wrong attempt, for tasks that make one). Then,
where SDPO actually uses its teacher, on the plain prompt's own failed completions: at each one's
first error against the row's reference, the share where the teacher puts more probability than
the student on the correct token, with the verifier's feedback on that completion
(``premise/first_error_feedback``) and with a correct solution (``premise/first_error_solution``),
over ``premise/first_errors`` completions (:mod:`posttrain.evaluation.premise`).

On a JSONL (``data_file``, rows read by :mod:`posttrain.evaluation.rows`) the ``scorer`` decides:
a rule or a Python verifier (:mod:`posttrain.evaluation.scorers`) gives ``accuracy`` (and pass@k,
as on a task); a judge (reward model, log-prob A/B, OpenAI-compatible) gives ``mean_score``, or,
with ``baseline_model``, compares the two models' greedy completions row by row for a
``win_rate`` (:mod:`posttrain.evaluation.win_rate`). Same artifacts: ``eval.json`` and
``predictions.jsonl``. Models are loaded one at a time (the model, the baseline, then the judge),
each freed before the next.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from posttrain.artifacts import write_json
from posttrain.config import config_field
from posttrain.data.base_format import END
from posttrain.data.jsonl import write_jsonl
from posttrain.data.reprompting import RepromptSettings, reprompt_text
from posttrain.errors import ConfigError, DataError
from posttrain.evaluation.accuracy import follows_format, pass_at_k
from posttrain.evaluation.premise import correct_token_log_prob, first_error, teacher_wins
from posttrain.evaluation.rows import EvalRow, prompt_text, read_eval_rows
from posttrain.evaluation.scorers import RULES, load_verifier, reference_problem, rule, verifier_result
from posttrain.evaluation.win_rate import OUTCOME, win_rate
from posttrain.generation.few_shot import few_shot_prompt
from posttrain.generation.sampling import cut_at_stop, generate
from posttrain.judges.factory import JUDGES, JudgeArguments
from posttrain.models import ModelArguments, check_model_source, free_model, load_model, load_tokenizer, render_prompt
from posttrain.models.loading import generation_device
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks import get_task

log = get_logger(__name__)

JUDGE_SCORERS = tuple(name for name in JUDGES if name != "verifier")  # a task's verifier needs a task


@dataclass
class EvalConfig(JudgeArguments, ModelArguments):
    output_dir: str = config_field("runs/eval", help="Where eval.json and predictions.jsonl go.")
    task: str = config_field("arithmetic", help="Built-in task to evaluate on (unless data_file is set).")
    task_options: dict = config_field({}, help="Task options (must match those used for training).")
    split: str = config_field("test", help="Split of the task or of data_file, optionally sliced: test, test[:200] (a local "
                              "file is one split: only the slice applies).")
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
    data_file: str = config_field(
        "", help="Evaluate on this dataset instead of the task, one row per prompt with its reference: a local .jsonl, .json, "
        ".parquet or .csv file, a save_to_disk directory or a hub dataset id."
    )
    dataset_config: str = config_field("", help="The subset (config) of a hub data_file: e.g. main for openai/gsm8k.")
    prompt_field: str = config_field("prompt", help="data_file: the field holding the prompt (a string, or a list of chat messages).")
    reference_field: str = config_field("reference", help="data_file: the field holding the reference the scorer compares with.")
    scorer: str = config_field(
        "exact",
        help="data_file: exact | contains | regex (the reference is a pattern searched in the completion) | numeric (the "
             "completion's last number) | module:function (a Python verifier) | a judge: reward_model, logprob_ab, openai "
             "(mean score; with baseline_model, a win rate).",
    )
    normalize: bool = config_field(False, help="exact, contains: compare in lower case, with runs of whitespace as one space.")
    tolerance: float = config_field(0.0, help="numeric: the largest accepted |last number - reference|.", ge=0)
    baseline_model: str | None = config_field(
        None, help="data_file with a judge scorer: win rate of the model against this one (greedy completions of both; a tie counts half)."
    )

    def __post_init__(self):
        if self.premise_check and self.base_model_mode:
            raise ConfigError("config key 'premise_check': SDPO's teacher contexts are chat prompts; it needs a chat model")
        if self.few_shot and not self.base_model_mode:
            raise ConfigError("config key 'few_shot': few-shot prompts are for base models; set base_model_mode: true")
        if self.num_samples and any(not isinstance(k, int) or not 1 <= k <= self.num_samples for k in self.pass_k):
            raise ConfigError(f"config key 'pass_k': every k must be an integer in [1, num_samples={self.num_samples}]")
        if self.data_file:
            self._check_scorer()
        elif self.baseline_model:
            raise ConfigError("config key 'baseline_model': a win rate is measured on the prompts of a data_file; set data_file")

    def _check_scorer(self) -> None:
        """The data_file keys fit together, and a Python verifier imports (before any model loads)."""
        judge = self.scorer in JUDGE_SCORERS
        if self.premise_check:
            raise ConfigError("config key 'premise_check': SDPO's teacher contexts come from a task; it does not apply to data_file")
        if not judge and self.scorer not in RULES:
            if ":" not in self.scorer:
                raise ConfigError(f"config key 'scorer': unknown scorer '{self.scorer}' "
                                  f"(available: {', '.join((*RULES, *JUDGE_SCORERS))}, or module:function)")
            load_verifier(self.scorer)
        if self.normalize and self.scorer not in ("exact", "contains"):
            raise ConfigError(f"config key 'normalize' applies to the exact and contains scorers, not '{self.scorer}'")
        if self.tolerance and self.scorer != "numeric":
            raise ConfigError(f"config key 'tolerance' applies to the numeric scorer, not '{self.scorer}'")
        if self.baseline_model and not judge:
            raise ConfigError(f"config key 'baseline_model': a win rate needs a judge as scorer ({', '.join(JUDGE_SCORERS)}), got '{self.scorer}'")
        if judge and self.num_samples:
            raise ConfigError("config key 'num_samples': pass@k needs a scorer that says right or wrong, not a judge")
        if judge and not self.judge_model:
            raise ConfigError(f"scorer '{self.scorer}' needs judge_model (a model directory or hub id, or the API's model name)")
        if self.scorer == "openai" and not self.judge_base_url:
            raise ConfigError("scorer 'openai' needs judge_base_url")


def _score_all(task, rows: list[dict], completions: list[str]) -> list[tuple[float, str | None]]:
    return [task.score(row["prompt"], text, **row) for row, text in zip(rows, completions)]


def _premise_check(model, tokenizer, task, rows: list[dict], config: EvalConfig) -> dict[str, float]:
    """Greedy accuracy with the plain prompt, a correct solution in context and feedback on a
    wrong attempt in context (the teacher prompts of SDPO's reprompting); then, on the plain
    prompt's failed completions, the teacher against the student at each one's first error."""
    rng = random.Random(config.seed)
    contexts = {"plain": [row["prompt"] for row in rows], "demonstration": [task.hinted_prompt(row) for row in rows]}
    if hasattr(task, "feedback_prompt"):
        contexts["feedback"] = [task.feedback_prompt(row, rng) for row in rows]
    result, completions, scores = {}, {}, {}
    for name, prompts in contexts.items():
        rendered = [render_prompt(tokenizer, prompt, False, config.chat_template_kwargs) for prompt in prompts]
        completions[name] = [t[0] for t in generate(model, tokenizer, rendered, max_new_tokens=config.max_new_tokens,
                                                    batch_size=config.batch_size, desc=f"premise: {name}")]
        scores[name] = _score_all(task, rows, completions[name])
        result[f"premise/{name}"] = sum(reward for reward, _ in scores[name]) / len(rows)
    result.update(_first_error_premise(model, tokenizer, task, rows, completions["plain"], scores["plain"], config))
    log.info("premise check: " + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in result.items() if isinstance(v, float)))
    return result


def _first_error_premise(model, tokenizer, task, rows: list[dict], completions: list[str],
                         scored: list[tuple[float, str | None]], config: EvalConfig) -> dict[str, float | None]:
    """On each failed completion (``scored``: its reward and the verifier's feedback) that leaves its row's reference ``completion`` somewhere
    (:func:`posttrain.evaluation.premise.first_error`): whether the teacher with the verifier's
    feedback on *this* completion, and the teacher with a correct solution, put more probability
    than the student on the correct token there. SDPO learns from failures exactly there."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    def context(prompt: str) -> list[int]:
        return ids(render_prompt(tokenizer, prompt, False, config.chat_template_kwargs))

    log_probs = {"student": [], "feedback": [], "solution": []}
    for row, completion, (reward, feedback) in tqdm(list(zip(rows, completions, scored)), desc="premise: first errors", leave=False):
        error = first_error(ids(completion), ids(row["completion"])) if reward < 1.0 and "completion" in row else None
        if error is None:
            continue
        teacher_contexts = {"student": row["prompt"], "feedback": reprompt_text(row["prompt"], None, feedback, RepromptSettings()),
                            "solution": task.hinted_prompt(row)}
        for name, prompt in teacher_contexts.items():
            log_probs[name].append(correct_token_log_prob(model, context(prompt), error))
    return {"premise/first_errors": len(log_probs["student"]),
            "premise/first_error_feedback": teacher_wins(log_probs["student"], log_probs["feedback"]),
            "premise/first_error_solution": teacher_wins(log_probs["student"], log_probs["solution"])}


def run_eval(config: EvalConfig) -> dict:
    """Evaluate one model, free it, write the artifacts, return the metrics."""
    seed_everything(config.seed)
    if config.data_file:
        metrics, predictions = _eval_data_file(config)
    else:
        metrics, predictions = _eval_task(config)
    out = Path(config.output_dir)
    write_jsonl(out / "predictions.jsonl", predictions)
    write_json(out / "eval.json", metrics)
    log.info("eval: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


def _render(tokenizer, prompts: list, config: EvalConfig) -> tuple[list[str], list[str] | None]:
    """The texts the model continues, and the stop strings its completions end at."""
    stop = [END] if config.base_model_mode else None
    if config.few_shot:
        rng = random.Random(config.seed)  # draws the examples, in prompt order
        rendered = [few_shot_prompt(prompt, rng, config.few_shot) for prompt in prompts]
        stop.append("\nInstruction:")  # a base model that does not close with END writes the next example next
    else:
        rendered = [render_prompt(tokenizer, prompt, config.base_model_mode, config.chat_template_kwargs) for prompt in prompts]
    return rendered, stop


def _greedy(model, tokenizer, rendered: list[str], stop: list[str] | None, config: EvalConfig) -> tuple[list[str], list[bool]]:
    """One greedy completion per prompt, cut at the stop strings, and whether each follows the format."""
    # stop strings kept for the compliance check; one completion (and its token count) per prompt
    raw_groups, count_groups = generate(
        model, tokenizer, rendered, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size,
        stop_strings=stop, desc="greedy", return_token_counts=True, keep_stop_strings=True,
    )
    raw = [group[0] for group in raw_groups]
    formatted = [follows_format(text, counts[0], config.max_new_tokens, config.base_model_mode)
                 for text, counts in zip(raw, count_groups)]
    return [cut_at_stop(text, stop) for text in raw], formatted


def _sample(model, tokenizer, rendered: list[str], stop: list[str] | None, config: EvalConfig) -> list[list[str]]:
    """``num_samples`` sampled completions per prompt, for pass@k."""
    return generate(model, tokenizer, rendered, num_return_sequences=config.num_samples, do_sample=True,
                    temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
                    batch_size=max(1, config.batch_size // config.num_samples), stop_strings=stop, desc="sampling")


def _pass_at_k(correct: list[int], config: EvalConfig) -> dict:
    """pass@k for every k of the config, from the number of correct samples per prompt."""
    metrics = {f"pass@{k}": sum(pass_at_k(config.num_samples, c, k) for c in correct) / len(correct) for k in config.pass_k}
    return {**metrics, "num_samples": config.num_samples, "temperature": config.temperature}


def _eval_task(config: EvalConfig) -> tuple[dict, list[dict]]:
    """Accuracy, format compliance, pass@k and the premise check on a task's split."""
    task = get_task(config.task, **config.task_options)
    rows = task.make_dataset(config.split, n=config.num_examples)
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    rendered, stop = _render(tokenizer, [row["prompt"] for row in rows], config)
    model = load_model(config.model_name_or_path, config.dtype, config.trust_remote_code, device=generation_device())
    try:
        greedy, formatted = _greedy(model, tokenizer, rendered, stop, config)
        premise = _premise_check(model, tokenizer, task, rows, config) if config.premise_check else {}
        sampled = _sample(model, tokenizer, rendered, stop, config) if config.num_samples else []
    finally:
        free_model(model)

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
        metrics.update(_pass_at_k(correct, config))
    return metrics, predictions


def _completions(model_name: str, prompts: list, config: EvalConfig, sample: bool) -> tuple[list[str], list[bool], list[list[str]]]:
    """Load one model, complete every prompt (greedy; sampled too when ``sample``), free it.
    Returns the greedy completions, whether each follows the format, and the samples."""
    tokenizer = load_tokenizer(model_name, config.base_model_mode, config.trust_remote_code)
    rendered, stop = _render(tokenizer, prompts, config)
    model = load_model(model_name, config.dtype, config.trust_remote_code, device=generation_device())
    try:
        greedy, formatted = _greedy(model, tokenizer, rendered, stop, config)
        sampled = _sample(model, tokenizer, rendered, stop, config) if sample else []
    finally:
        free_model(model)
    return greedy, formatted, sampled


def _row_scorer(config: EvalConfig):
    """``score(row, completion) -> (score, feedback)`` for a rule or a Python verifier."""
    if config.scorer in RULES:
        check = rule(config.scorer, config.normalize, config.tolerance)
        return lambda row, completion: (check(completion, row.reference), None)
    verifier = load_verifier(config.scorer)

    def verify(row: EvalRow, completion: str) -> tuple[float, str | None]:
        try:
            return verifier_result(verifier(row.prompt, completion, row.reference, row.fields))
        except ValueError as err:
            raise DataError(f"{row.where}: verifier {config.scorer} {err}") from None

    return verify


def _eval_data_file(config: EvalConfig) -> tuple[dict, list[dict]]:
    """The model on the rows of ``data_file``: scored by a rule, a verifier or a judge, or
    compared with ``baseline_model`` by a judge."""
    judged = config.scorer in JUDGE_SCORERS
    # judges need no reference; a verifier gets it as the row has it; a rule needs one it can use
    rows = read_eval_rows(
        config.data_file, config.prompt_field, config.reference_field, needs_reference=not judged,
        reference_problem=partial(reference_problem, config.scorer) if config.scorer in RULES else None,
        plain_prompts=config.base_model_mode, split=config.split, dataset_config=config.dataset_config,
    )[: config.num_examples]
    score = None if judged else _row_scorer(config)
    local_models = [config.baseline_model]
    if judged and config.scorer != "openai":  # an API judge's judge_model is a name, not a directory
        local_models.append(config.judge_model)
    for name in filter(None, local_models):
        check_model_source(name)  # a missing model fails now, not after generation
    # An API judge holds no model, so it is built first (a missing key fails before generation);
    # a judge model loads only after the evaluated models are freed.
    judge = config.build_judge(config.scorer, config.output_dir) if config.scorer == "openai" else None
    prompts = [row.prompt for row in rows]
    greedy, formatted, sampled = _completions(config.model_name_or_path, prompts, config, sample=bool(config.num_samples))
    baseline = _completions(config.baseline_model, prompts, config, sample=False)[0] if config.baseline_model else None

    metrics = {"model": config.model_name_or_path, "data_file": config.data_file, "scorer": config.scorer, "num_examples": len(rows)}
    predictions = [{"source": row.where, "prompt": row.prompt, "reference": row.reference, "completion": text, "follows_format": ok}
                   for row, text, ok in zip(rows, greedy, formatted)]
    if score is not None:
        results = [score(row, text) for row, text in zip(rows, greedy)]
        metrics["accuracy"] = sum(value for value, _ in results) / len(rows)
        for prediction, (value, feedback) in zip(predictions, results):
            prediction.update(score=value, feedback=feedback)
        if sampled:
            correct = [sum(score(row, text)[0] >= 1.0 for text in samples) for row, samples in zip(rows, sampled)]
            metrics.update(_pass_at_k(correct, config))
    else:
        judge = judge or config.build_judge(config.scorer, config.output_dir)
        try:
            if baseline is None:
                values = [judge.score(prompt_text(row.prompt), text) for row, text in zip(rows, greedy)]
                metrics["mean_score"] = sum(values) / len(rows)
                for prediction, value in zip(predictions, values):
                    prediction["score"] = value
            else:
                verdicts = [judge.compare(prompt_text(row.prompt), text, other) for row, text, other in zip(rows, greedy, baseline)]
                metrics.update(baseline_model=config.baseline_model, **win_rate(verdicts))
                for prediction, other, verdict in zip(predictions, baseline, verdicts):
                    prediction.update(baseline_completion=other, verdict=OUTCOME[verdict.preferred], prob_model_better=verdict.prob_a,
                                      orders_agree=verdict.orders_agree, judge_details=verdict.details)
        finally:
            if config.scorer != "openai":  # a local judge's model (an API judge's `model` is the API's model name)
                free_model(judge.model)
        if config.scorer == "openai":
            metrics.update(api_requests=judge.requests_sent, api_cache_hits=judge.cache_hits)
    metrics["format_compliance"] = sum(formatted) / len(rows)
    return metrics, predictions
