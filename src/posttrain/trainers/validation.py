"""Evaluation on held-out data during training, for ``posttrain sft``, ``dpo``, ``sdpo`` and ``grpo``.

The held-out rows are either a dataset of their own (``eval_dataset_name`` / ``eval_split``,
read by the same loader as the train data) or a seeded ``val_ratio`` share of the train rows.
They go to the TRL trainer as its ``eval_dataset`` with ``eval_strategy="steps"``, so TRL and
transformers run the evaluation: each trainer's own loss and metrics, logged with the ``eval_``
prefix (``eval_loss``, DPO's ``eval_rewards/accuracies``, GRPO's ``eval_reward``) into
``metrics.jsonl`` beside the training rows. ``load_best_model_at_end`` makes transformers load
the checkpoint with the best ``metric_for_best_model`` before the final model is saved.

Every combination that cannot work is a :class:`ConfigError` naming the key when the config
loads, before any data or model (transformers would refuse it, with a traceback, only once
training is set up); a ``val_ratio`` that leaves either side empty when the rows are loaded,
still before the model; a ``metric_for_best_model`` the run does not log at the first evaluation
(:class:`BestMetricCheck`), since only then are the metrics known.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from transformers import TrainerCallback

from posttrain.config import config_field
from posttrain.data.sources import DatasetReadArguments
from posttrain.errors import ConfigError
from posttrain.tasks.sources import load_rows, load_train_rows
from posttrain.trainers.settings import TrainingSettings

# what transformers adds to every evaluation's metrics: timings, not something to select a model by
_EVAL_TIMINGS = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch"}


@dataclass
class ValidationSettings(DatasetReadArguments, TrainingSettings):
    """The training settings plus held-out evaluation (a job config lists it before its other bases)."""

    eval_dataset_name: str | None = config_field(
        None, help="Held-out data to evaluate on during training: a .jsonl file, task:<name> or a hub dataset id, "
        "in the train data's format (the same dataset_columns; the same dataset_config and data_files when it is "
        "dataset_name itself, e.g. its test split)."
    )
    eval_split: str = config_field("test", help="Split of eval_dataset_name, optionally sliced: test, test[:200].")
    val_ratio: float | None = config_field(
        None, help="Instead of eval_dataset_name: hold out this share of the train rows, in (0, 1), chosen with the seed."
    )
    eval_steps: int | None = config_field(
        None, help="Evaluate every N optimizer steps and at the last one (default: logging_steps); needs held-out data.", ge=1
    )
    load_best_model_at_end: bool = config_field(
        False, help="Save as the final model the checkpoint with the best metric_for_best_model (needs held-out data, "
        "save_strategy: steps and save_steps a multiple of eval_steps)."
    )
    metric_for_best_model: str = config_field(
        "eval_loss", help="The evaluation metric that picks the best checkpoint (lower is better for a *loss, higher otherwise)."
    )

    def __post_init__(self):
        super().__post_init__()
        if self.val_ratio is not None and not 0 < self.val_ratio < 1:
            raise ConfigError(f"config key 'val_ratio' must be in (0, 1), got {self.val_ratio}")
        if self.val_ratio is not None and self.eval_dataset_name:
            raise ConfigError(
                "config key 'val_ratio' cannot be combined with 'eval_dataset_name': hold out part of the train data "
                "or name a held-out dataset, not both"
            )
        for key in ("eval_steps", "load_best_model_at_end"):
            if getattr(self, key) and not self.evaluates:
                raise ConfigError(f"config key '{key}' needs held-out data: set eval_dataset_name or val_ratio")
        if self.load_best_model_at_end and (self.save_strategy != "steps" or self.save_steps % self.every != 0):
            raise ConfigError(
                f"config key 'load_best_model_at_end' needs a checkpoint at every evaluation: set save_strategy: steps "
                f"and save_steps to a multiple of eval_steps ({self.every}; now save_strategy {self.save_strategy}, "
                f"save_steps {self.save_steps})"
            )

    @property
    def evaluates(self) -> bool:
        return bool(self.eval_dataset_name) or self.val_ratio is not None

    @property
    def every(self) -> int:
        """Optimizer steps between evaluations."""
        return self.eval_steps or self.logging_steps

    def trl_kwargs(self, trl_config_cls: type, **command_args) -> dict:
        """The training settings' TRL arguments, plus the evaluation schedule when there is held-out data."""
        if not self.evaluates:
            return super().trl_kwargs(trl_config_cls, **command_args)
        evaluation = {"eval_strategy": "steps", "eval_steps": self.every}
        if self.load_best_model_at_end:
            evaluation.update(load_best_model_at_end=True, metric_for_best_model=self.metric_for_best_model)
        return super().trl_kwargs(trl_config_cls, **evaluation, **command_args)

    def training_rows(self, preference: bool = False) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]] | None]:
        """The job's rows (its dataset or dataset_mixture; a task's verifier-built pairs with
        ``preference``), split into those to train on and the held-out ones (see :meth:`split_rows`)."""
        return self.split_rows(load_train_rows(self, preference=preference), preference=preference)

    def split_rows(
        self, rows: list[tuple[str, dict]], preference: bool = False
    ) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]] | None]:
        """The rows to train on and the held-out rows (None without evaluation). A ``task:<name>``
        eval dataset is built as the train rows were (the job's ``task_options``, ``preference``).

        ``val_ratio`` holds out rows by location, so copies of a row (a ``dataset_mixture`` weight
        above 1 repeats rows) all stay on one side, and the held-out side keeps one copy: no row is
        both trained and evaluated on."""
        if self.eval_dataset_name:
            same = {"dataset_config": self.dataset_config, "data_files": self.data_files} if self.eval_dataset_name == self.dataset_name else {}
            return rows, load_rows(self.eval_dataset_name, self.eval_split, self.task_options, preference=preference,
                                   columns=self.dataset_columns, **same)
        if self.val_ratio is None:
            return rows, None
        locations = list(dict.fromkeys(location for location, _ in rows))
        held_out = round(len(locations) * self.val_ratio)
        if not 0 < held_out < len(locations):
            raise ConfigError(
                f"config key 'val_ratio' ({self.val_ratio}) of {len(locations)} train rows holds out {held_out}: "
                "both the train and the held-out part need at least one row"
            )
        chosen = set(random.Random(self.seed).sample(locations, held_out))
        train = [row for row in rows if row[0] not in chosen]
        return train, list(dict(row for row in rows if row[0] in chosen).items())


class BestMetricCheck(TrainerCallback):
    """A ``metric_for_best_model`` the run does not log is a config error at the first evaluation,
    naming the metrics it does log (transformers would stop with a KeyError and a traceback).
    Which metrics exist is only known then: GRPO's depend on the reward functions' names."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        name = args.metric_for_best_model
        if not (args.load_best_model_at_end and name and metrics):
            return
        if (name if name.startswith("eval_") else f"eval_{name}") not in metrics:
            logged = ", ".join(sorted(key for key in metrics if key not in _EVAL_TIMINGS))
            raise ConfigError(f"config key 'metric_for_best_model': '{name}' is not an evaluation metric of this run; it logs {logged}")
