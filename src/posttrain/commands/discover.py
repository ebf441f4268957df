"""``posttrain discover``: test-time SDPO on problems the model almost never solves, against
best-of-k sampling (Hübotter et al. 2026, §5), measured as discovery@k.

Test-time SDPO trains on one problem at a time. It samples a group of G attempts and scores them
with the verifier. While none succeeds, it distils the model shown the verifier's feedback on each
failed attempt into the model, so the next group comes from a model that has read the feedback.
Best-of-k (``method: sampling``) draws the same number of attempts from the unchanged model.

1. **Problems**: the rows of ``dataset_train_split`` (a task's held-out problems by default). With
   ``max_pass_rate`` only those whose pass rate, estimated from ``pass_rate_samples`` samples of
   the starting model, is below it (pass@64 < 3% by default); the first ``max_problems`` of them.
   The estimates go to ``pass_rates.json``; ``pass_rates_from`` reuses another run's, so that
   methods and seeds are compared on one set of problems.
2. **Each problem**, from the starting weights: ``sampling`` draws ``budget`` attempts; ``sdpo``
   runs ``budget / num_generations`` SDPO steps on that problem alone and stops after the step
   whose group holds the first success.
3. **discovery.json**: each problem's attempt number of its first success (null: none within the
   budget) and discovery@k at k = G, 2G, ..., budget. It is rewritten after every problem; a
   rerun skips the problems it holds (and reads its own pass_rates.json).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from transformers import TrainerCallback

from posttrain.artifacts import write_json
from posttrain.commands.sdpo import SDPOJobConfig, build_sdpo_trainer, prompt_dataset, reward_functions, reward_totals
from posttrain.config import config_field
from posttrain.errors import ConfigError
from posttrain.evaluation.accuracy import discovery_at_k
from posttrain.generation.sampling import generate
from posttrain.models import load_tokenizer
from posttrain.models.loading import free_model, generation_device, load_model, render_prompt
from posttrain.runtime import get_logger, process_rank, seed_everything
from posttrain.tasks.sources import load_train_rows

log = get_logger(__name__)

PASS_RATES_FILE = "pass_rates.json"
DISCOVERY_FILE = "discovery.json"


@dataclass
class DiscoverConfig(SDPOJobConfig):
    """Everything ``posttrain discover`` needs: the SDPO keys (teacher, feedback, learning rate)
    of each problem's run, and which problems, how many attempts and which method."""

    method: Literal["sdpo", "sampling"] = config_field(
        "sdpo", help="sdpo: test-time SDPO on each problem alone; sampling: best-of-k from the unchanged model."
    )
    dataset_train_split: str = config_field("test", help="The problems attempted (a task's held-out ones by default), optionally sliced.")
    budget: int = config_field(64, help="Attempts per problem (the largest k of discovery@k), a multiple of num_generations.", ge=1)
    success_reward: float = config_field(1.0, help="An attempt succeeds when its reward (summed over the reward functions) reaches this.")
    max_pass_rate: float | None = config_field(
        0.03, help="Attempt only problems whose estimated pass rate is below this (None: every problem).", gt=0, le=1
    )
    pass_rate_samples: int = config_field(64, help="Samples of the starting model per problem that estimate its pass rate.", ge=1)
    pass_rate_seed: int = config_field(
        1000, help="Seed of the pass-rate samples, apart from seed: best-of-k then draws fresh attempts, not the ones that selected the problem."
    )
    pass_rates_from: str = config_field(
        "", help="A pass_rates.json of an earlier run (same model and problems) to reuse instead of sampling again."
    )
    max_problems: int = config_field(20, help="Attempt at most this many problems (the first that qualify).", ge=1)

    def __post_init__(self):
        super().__post_init__()
        if self.budget % self.num_generations:
            raise ConfigError(f"config key 'budget' ({self.budget}) must be a multiple of num_generations ({self.num_generations})")
        if self.max_pass_rate is not None and self.pass_rate_seed == self.seed:
            raise ConfigError("config keys 'pass_rate_seed' and 'seed' must differ: best-of-k would redraw the samples that chose its problems")
        if self.method == "sdpo" and self.grpo_weight == 1.0:
            raise ConfigError("config key 'grpo_weight': test-time SDPO needs a teacher (grpo_weight < 1)")


class StopAtFirstSuccess(TrainerCallback):
    """Records the attempt number of the first success of a one-problem SDPO run (its groups are
    attempts ``step·G + 1`` to ``(step + 1)·G``, in sampling order) and stops training after that step."""

    def __init__(self, trainer, success_reward: float):
        self.trainer, self.success_reward = trainer, success_reward
        self.first_success: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        rewards = self.trainer._rewards.tolist()  # the group this step trained on
        hits = [i for i, reward in enumerate(rewards) if reward >= self.success_reward]
        if hits and self.first_success is None:
            self.first_success = (state.global_step - 1) * len(rewards) + hits[0] + 1
            control.should_training_stop = True
        return control


def _attempt_texts(model, tokenizer, config: DiscoverConfig, prompts: list, count: int, desc: str) -> list[list[str]]:
    """``count`` sampled completions per prompt, sampled as the SDPO trainer samples (temperature,
    max_completion_length, the chat template)."""
    rendered = [render_prompt(tokenizer, prompt, False, config.chat_template_kwargs) for prompt in prompts]
    return generate(model, tokenizer, rendered, num_return_sequences=count, do_sample=True, temperature=config.temperature,
                    max_new_tokens=config.max_completion_length, batch_size=max(1, 512 // count), desc=desc)


def _successes(functions, dataset, index: int, texts: list[str], threshold: float) -> list[bool]:
    rows = dataset.select([index] * len(texts))
    return [reward >= threshold for reward in reward_totals(functions, rows, texts)]


def pass_rates(config: DiscoverConfig, dataset, functions, model, tokenizer) -> list[float]:
    """Each problem's share of successes among ``pass_rate_samples`` samples of the starting model."""
    seed_everything(config.pass_rate_seed)
    samples = _attempt_texts(model, tokenizer, config, list(dataset["prompt"]), config.pass_rate_samples, "pass rates")
    return [sum(_successes(functions, dataset, i, texts, config.success_reward)) / len(texts) for i, texts in enumerate(samples)]


def _best_of_k(config: DiscoverConfig, dataset, functions, index: int, model, tokenizer) -> int | None:
    seed_everything(config.seed + index)
    texts = _attempt_texts(model, tokenizer, config, [dataset[index]["prompt"]], config.budget, f"problem {index}")[0]
    hits = _successes(functions, dataset, index, texts, config.success_reward)
    return hits.index(True) + 1 if any(hits) else None


def _test_time_sdpo(config: DiscoverConfig, rows: list[tuple[str, dict]], index: int) -> int | None:
    """SDPO on problem ``index`` alone (one group per step) from the starting weights."""
    group = config.num_generations
    one_problem = replace(
        config, output_dir=str(Path(config.output_dir) / f"problem-{index}"), seed=config.seed + index,
        per_device_train_batch_size=group, gradient_accumulation_steps=1, max_steps=config.budget // group,
        save_strategy="no", logging_steps=1,
    )
    trainer = build_sdpo_trainer(one_problem, rows=[rows[index]])
    stop = StopAtFirstSuccess(trainer, config.success_reward)
    trainer.add_callback(stop)
    trainer.train()
    free_model(trainer.model)
    return stop.first_success


def _summary(config: DiscoverConfig, problems: list[dict]) -> dict:
    firsts = [problem["first_success"] for problem in problems]
    ks = range(config.num_generations, config.budget + 1, config.num_generations)
    return {
        "method": config.method, "model": config.model_name_or_path, "budget": config.budget, "num_problems": len(problems),
        "discovery": {str(k): discovery_at_k(firsts, k) for k in ks} if problems else {},
        "problems": problems,
    }


def _finished_problems(config: DiscoverConfig, path: Path) -> dict[int, dict]:
    """The problems an earlier run of this config wrote to ``path`` (none if there is no file)."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if (saved["method"], saved["budget"]) != (config.method, config.budget):
        raise ConfigError(f"{path} holds a run with method {saved['method']} and budget {saved['budget']}, not "
                          f"{config.method} and {config.budget}: give this run another output_dir")
    return {problem["index"]: problem for problem in saved["problems"]}


def run_discover(config: DiscoverConfig) -> dict:
    """Attempt every selected problem with the configured method; write and return discovery@k."""
    if process_rank() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("posttrain discover runs in one process (each problem's SDPO run is one group per step): "
                          "start it without torchrun or accelerate launch")
    out = Path(config.output_dir)
    rows = load_train_rows(config)
    dataset = prompt_dataset(rows)
    functions = reward_functions(config)
    # the pass rates of another run, or of this one before it stopped
    estimates = config.pass_rates_from or (str(out / PASS_RATES_FILE) if (out / PASS_RATES_FILE).exists() else "")
    sample_rates = config.max_pass_rate is not None and not estimates
    model = tokenizer = None
    try:
        if sample_rates or config.method == "sampling":  # the start model, loaded once for all its sampling
            tokenizer = load_tokenizer(config.model_name_or_path, False, config.trust_remote_code)
            model = load_model(config.model_name_or_path, config.dtype, config.trust_remote_code, device=generation_device())
        if config.max_pass_rate is None:
            rates = [None] * len(dataset)
        elif estimates:
            rates = json.loads(Path(estimates).read_text())["pass_rates"]
            if len(rates) != len(dataset):
                raise ConfigError(f"{estimates} holds {len(rates)} pass rates for the {len(dataset)} problems of this split")
        else:
            rates = pass_rates(config, dataset, functions, model, tokenizer)
            write_json(out / PASS_RATES_FILE, {"model": config.model_name_or_path, "samples": config.pass_rate_samples, "pass_rates": rates})
        if config.method == "sdpo":  # each problem's SDPO run loads its own trainable copy
            free_model(model)
            model = None
        chosen = [i for i, rate in enumerate(rates) if rate is None or rate < config.max_pass_rate][: config.max_problems]
        log.info(f"discover ({config.method}): {len(chosen)} problems (pass rate below {config.max_pass_rate}), {config.budget} attempts each")
        if not chosen:
            raise ConfigError(f"no problem of {config.dataset_train_split} has a pass rate below max_pass_rate ({config.max_pass_rate})")

        done = _finished_problems(config, out / DISCOVERY_FILE)
        problems = []
        for index in chosen:
            if index not in done:
                first = (_best_of_k(config, dataset, functions, index, model, tokenizer) if config.method == "sampling"
                         else _test_time_sdpo(config, rows, index))
                done[index] = {"index": index, "prompt": dataset[index]["prompt"][-1]["content"], "pass_rate": rates[index],
                               "first_success": first}
                log.info(f"problem {index}: " + (f"solved at attempt {first}" if first else f"not solved in {config.budget}"))
            problems.append(done[index])
            summary = _summary(config, problems)
            write_json(out / DISCOVERY_FILE, summary)
    finally:
        free_model(model)
    log.info("discovery@k: " + ", ".join(f"@{k} {share:.2f}" for k, share in summary["discovery"].items()))
    return {f"discovery@{k}": share for k, share in summary["discovery"].items()} | {"num_problems": len(problems)}
