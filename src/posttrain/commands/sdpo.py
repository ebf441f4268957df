"""``posttrain sdpo`` and ``posttrain grpo``: self-distillation RL, or plain GRPO, on TRL's
GRPOTrainer.

The config names the prompts (a task, whose verifier is the reward, a ``.jsonl`` file or a hub
dataset), the reward functions and the SDPO options; the prompts and every reward function are
checked on the first rows before the model loads, and train on
:class:`posttrain.trainers.sdpo.SDPOTrainer`. ``posttrain grpo`` is the same config with
``grpo_weight`` 1: TRL's GRPO, no teacher.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, fields
from typing import Callable

from datasets import Dataset
from transformers import TrainerState
from trl import GRPOConfig

from posttrain.config import config_field
from posttrain.data.mixture import MIXTURE_HELP, check_dataset_keys
from posttrain.data.chat import check_messages
from posttrain.errors import ConfigError, DataError, PosttrainError
from posttrain.evaluation.scorers import RULES, check_references, reference_reward
from posttrain.models import LoraArguments, ModelArguments, load_tokenizer
from posttrain.models.loading import check_model_source, load_model_for_training
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks import get_task
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.loop import train_and_save
from posttrain.trainers.rewards import FeedbackReward, TaskReward, feedback_reward, import_reward_function
from posttrain.trainers.sdpo import SDPOSettings, SDPOTrainer
from posttrain.trainers.teachers import check_teacher_fits
from posttrain.trainers.validation import BestMetricCheck, ValidationSettings
from posttrain.trainers.vllm_sampling import VLLMArguments

log = get_logger(__name__)


@dataclass
class SDPOJobConfig(SDPOSettings, VLLMArguments, ValidationSettings, LoraArguments, ModelArguments):
    """Everything ``posttrain sdpo`` (and ``posttrain grpo``) needs."""

    dataset_name: str = config_field(
        "", help="Prompts: task:<name> (its verifier is the reward), a .jsonl file, or a hub dataset id (task:arithmetic "
        "when neither it nor dataset_mixture is set)."
    )
    dataset_train_split: str = config_field("train", help="Split, optionally sliced: train, train[:1%].")
    task_options: dict = config_field({}, help="Options of a task:<name> dataset.")
    dataset_mixture: list[dict] = config_field([], help=MIXTURE_HELP + " Every source needs the same columns.")
    reward_functions: list[str] = config_field(
        [], help="Reward functions as 'package.module:function', or a scorer rule (exact, contains, regex, numeric) against "
        "each row's reference column (default for task datasets: the task's verifier)."
    )
    num_generations: int = config_field(8, help="G: completions sampled per prompt.", ge=2)
    max_completion_length: int = config_field(256, help="Longest sampled completion in tokens.", ge=1)
    temperature: float = config_field(1.0, help="Sampling temperature.", gt=0)
    beta: float = config_field(0.0, help="KL penalty toward the initial policy in the GRPO loss (TRL's beta).", ge=0)
    metric_for_best_model: str = config_field(
        "eval_reward", help="The evaluation metric that picks the best checkpoint: by default the mean reward of "
        "num_generations samples per held-out prompt (lower is better for a *loss, higher otherwise)."
    )

    def __post_init__(self):
        SDPOSettings.__post_init__(self)
        ValidationSettings.__post_init__(self)
        self.dataset_name = check_dataset_keys(self.dataset_name, self.dataset_train_split, self.dataset_mixture, "task:arithmetic")
        if self.base_model_mode:
            raise ConfigError("SDPO reprompts the teacher as a conversation: it needs a chat model (base_model_mode: false)")
        if self.teacher == "lora_ema" and not self.use_peft:
            raise ConfigError("teacher 'lora_ema' keeps the teacher as a second LoRA adapter: set use_peft: true (or teacher: ema)")


def sdpo_settings(config: SDPOJobConfig) -> SDPOSettings:
    return SDPOSettings(**{f.name: getattr(config, f.name) for f in fields(SDPOSettings)})


def prompt_dataset(rows: list[tuple[str, dict]]) -> Dataset:
    """GRPO rows: ``prompt`` as chat messages, other columns kept for the reward functions.

    A reference ``completion`` column is dropped: the policy samples its own. Every row must
    carry the columns of the first (rows of a ``dataset_mixture`` too): the reward functions
    read them, and a column a row lacks would reach them as None.
    """
    examples = []
    for location, row in rows:
        prompt = row.get("prompt")
        if isinstance(prompt, str) and prompt:
            prompt = [{"role": "user", "content": prompt}]
        else:
            prompt = check_messages(prompt, location, "prompt")
        example = {**{k: v for k, v in row.items() if k not in ("completion", "messages")}, "prompt": prompt}
        if examples and example.keys() != examples[0].keys():
            first = rows[0][0]
            field = sorted(example.keys() ^ examples[0].keys())[0]
            problem = f"missing field '{field}' that {first} has" if field in examples[0] else f"field '{field}' that {first} lacks"
            raise DataError(f"{location}: {problem} (every prompt row needs the same fields, for the reward functions)")
        examples.append(example)
    return Dataset.from_list(examples)


def reward_functions(config: SDPOJobConfig) -> list[Callable]:
    functions: list[Callable] = [reference_reward(path) if path in RULES else import_reward_function(path)
                                 for path in config.reward_functions]
    # a task's verifier is the default reward when every prompt comes from that task
    names = {entry["name"] for entry in config.dataset_mixture} or {config.dataset_name}
    if not functions and len(names) == 1 and (name := names.pop()).startswith("task:"):
        functions.append(TaskReward(get_task(name.removeprefix("task:"), **config.task_options)))
    if not functions:
        raise ConfigError("config key 'reward_functions' is empty: name at least one 'package.module:function' (or use a task: dataset)")
    return [feedback_reward(f) for f in functions]


def reward_totals(functions: list[FeedbackReward], rows: Dataset, texts: list[str]) -> list[float]:
    """Each completion's reward summed over the reward functions, called with the arguments TRL
    passes (completion i answers row i of ``rows``)."""
    columns = {key: list(rows[key]) for key in rows.column_names if key != "prompt"}
    completions = [[{"role": "assistant", "content": text}] for text in texts]
    kwargs = dict(
        prompts=list(rows["prompt"]), completions=completions, completion_ids=[[] for _ in completions],
        trainer_state=TrainerState(), log_extra=lambda column, values: None, log_metric=lambda name, value: None, **columns,
    )
    totals = [0.0] * len(texts)
    for function in functions:
        result = function(**kwargs)
        rewards = asyncio.run(result) if inspect.isawaitable(result) else result
        totals = [total + reward for total, reward in zip(totals, rewards)]
    return totals


def check_rewards(functions: list[FeedbackReward], dataset: Dataset) -> None:
    """Call every reward function on two rows before training, with the arguments TRL passes: a
    wrong signature, count or value fails here, in seconds, instead of after the first generation."""
    rows = dataset.select(range(min(2, len(dataset))))
    for function in functions:
        try:
            reward_totals([function], rows, [""] * len(rows))
        except PosttrainError:
            raise
        except Exception as err:
            raise ConfigError(f"reward function '{function.__name__}' fails on the first rows: {type(err).__name__}: {err}") from None


def build_sdpo_trainer(config: SDPOJobConfig, rows: list[tuple[str, dict]] | None = None) -> SDPOTrainer:
    """Validate, load prompts (or train on the given ``(location, row)`` ``rows``) and reward
    functions, load the model, return a ready trainer."""
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    rows, eval_rows = (rows, None) if rows is not None else config.training_rows()
    dataset = prompt_dataset(rows)
    eval_dataset = prompt_dataset(eval_rows) if eval_rows else None
    functions = reward_functions(config)
    for rule_name in set(config.reward_functions) & set(RULES):
        check_references(rule_name, rows + (eval_rows or []))
    check_rewards(functions, dataset)
    config.check_vllm()
    if config.grpo_weight < 1.0:
        check_teacher_fits(config.teacher)
    trl_args = GRPOConfig(**{
        # an evaluation batch holds whole groups of num_generations samples (trainer_args may set another multiple)
        "per_device_eval_batch_size": config.num_generations,
        **config.trl_kwargs(
            GRPOConfig,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            beta=config.beta,
            chat_template_kwargs=config.chat_template_kwargs or None,
            **config.vllm_kwargs(),
        ),
    })
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    method = "GRPO" if config.grpo_weight == 1.0 else f"SDPO (teacher {config.teacher}, λ={config.grpo_weight})"
    log.info(f"{method} on {len(dataset)} prompts from {config.dataset_name or 'the dataset_mixture'}, {config.num_generations} samples each")
    if eval_dataset:
        log.info(f"evaluating on {len(eval_dataset)} held-out prompts every {config.every} steps (reward of fresh samples)")
    model = load_model_for_training(config)
    return SDPOTrainer(
        model=model,
        reward_funcs=functions,
        args=trl_args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=config.lora_config(model),
        callbacks=[MetricsFileCallback(config.output_dir), BestMetricCheck()],
        sdpo=sdpo_settings(config),
        on_nonfinite_loss=config.on_nonfinite_loss,
    )


def run_sdpo(config: SDPOJobConfig) -> dict:
    """Train; save the final model (or adapter); return the train metrics."""
    trainer = build_sdpo_trainer(config)
    return train_and_save(trainer, config.output_dir, config.resume)


@dataclass
class GRPOJobConfig(SDPOJobConfig):
    """``posttrain grpo``: any SDPO config, trained as plain GRPO (``grpo_weight`` 1, no teacher)."""

    grpo_weight: float = config_field(1.0, help="Always 1.0 for posttrain grpo (a value from an SDPO config is replaced).")

    def __post_init__(self):
        if self.grpo_weight != 1.0:
            log.info(f"posttrain grpo trains plain GRPO: grpo_weight {self.grpo_weight} from the config is replaced by 1.0")
            self.grpo_weight = 1.0
        super().__post_init__()


def run_grpo(config: GRPOJobConfig) -> dict:
    return run_sdpo(config)
