"""Training settings shared by every trainer, named as in transformers' ``TrainingArguments``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from posttrain.config import config_field
from posttrain.errors import ConfigError


# trainer_args that would carry a credential into the config saved with every checkpoint
# (training_args.bin): refused, with the environment variable to use.
SECRET_TRAINER_ARGS = {"hub_token": "HF_TOKEN", "push_to_hub_token": "HF_TOKEN"}


def check_no_secrets(trainer_args: dict) -> None:
    """A ConfigError for a credential in ``trainer_args`` (its value is never echoed)."""
    for key in trainer_args:
        if key in SECRET_TRAINER_ARGS:
            raise ConfigError(
                f"trainer_args: '{key}' is not accepted: a token in the config would be saved with the run "
                f"(training_args.bin in every checkpoint); set {SECRET_TRAINER_ARGS[key]} "
                "in the environment instead"
            )


@dataclass
class TrainingSettings:
    output_dir: str = config_field("runs/train", help="Where checkpoints, logs and the final model go.")
    num_train_epochs: float = config_field(3.0, help="Passes over the training data.", gt=0)
    max_steps: int = config_field(-1, help="Stop after this many optimizer steps (-1: use num_train_epochs).", ge=-1)
    learning_rate: float = config_field(2e-4, help="Peak learning rate.", gt=0)
    per_device_train_batch_size: int = config_field(8, help="Examples per device per step.", ge=1)
    gradient_accumulation_steps: int = config_field(1, help="Micro-batches per optimizer step.", ge=1)
    lr_scheduler_type: str = config_field("linear", help="transformers scheduler name (linear, cosine, constant, ...).")
    warmup_steps: float = config_field(0.0, help="Warmup steps (a value below 1 is a fraction of all steps).", ge=0)
    weight_decay: float = config_field(0.0, help="AdamW weight decay.", ge=0)
    max_grad_norm: float = config_field(1.0, help="Gradient clipping norm.", gt=0)
    logging_steps: int = config_field(10, help="Log metrics every N steps.", ge=1)
    save_strategy: Literal["epoch", "steps", "no"] = config_field("epoch", help="When to write checkpoints.")
    save_steps: int = config_field(500, help="Checkpoint interval with save_strategy=steps.", ge=1)
    save_total_limit: int | None = config_field(None, help="Keep at most this many checkpoints (None: all).", ge=1)
    seed: int = config_field(42, help="Seed for data order, initialisation and sampling.")
    bf16: bool = config_field(False, help="bfloat16 mixed precision (GPU).")
    gradient_checkpointing: bool = config_field(False, help="Trade compute for activation memory.")
    report_to: str = config_field("none", help="Experiment trackers: none, tensorboard, wandb (comma-separated).")
    resume: bool = config_field(False, help="Resume from the last checkpoint in output_dir, if any.")
    on_nonfinite_loss: Literal["stop", "skip"] = config_field(
        "stop", help="A NaN/Inf training loss: stop with the last good state saved as a checkpoint, or skip the batch."
    )
    trainer_args: dict = config_field({}, help="Any other TRL/transformers training argument, passed through (no hub_token: set HF_TOKEN).")

    def __post_init__(self):  # job configs with their own __post_init__ call this one first
        check_no_secrets(self.trainer_args)

    def trackers(self) -> list[str] | str:
        """``report_to`` for transformers: "none", or the named trackers, each installed (a
        missing one is a config error now rather than a crash once the model has loaded)."""
        if self.report_to == "none":
            return "none"
        from transformers.integrations import get_available_reporting_integrations

        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        installed = get_available_reporting_integrations()
        for name in names:
            if name != "all" and name not in installed:
                raise ConfigError(
                    f"config key 'report_to': '{name}' is not installed (pip install {name}); installed trackers: "
                    + (", ".join(installed) or "none")
                )
        return names

    def trl_kwargs(self, trl_config_cls: type, **command_args) -> dict:
        """Keyword arguments for a TRL config class (``trl.SFTConfig``, ``trl.DPOConfig``, ...):
        the training settings, ``command_args`` (what the command sets from its own keys: ``beta``,
        ``max_length``, ...) and ``trainer_args``. A trainer_args key that a config key already
        sets is refused: one way to set each thing, and no "multiple values" crash in TRL."""
        known = {f.name for f in dataclasses.fields(trl_config_cls)}
        check_no_secrets(self.trainer_args)
        settings = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(TrainingSettings)
            if f.name not in ("resume", "on_nonfinite_loss", "trainer_args")
        }
        for key in self.trainer_args:
            if key not in known:
                raise ConfigError(f"unknown key '{key}' in trainer_args (not a field of {trl_config_cls.__name__})")
            config_key = key in {f.name for f in dataclasses.fields(self)} and key != "trainer_args"
            if config_key or key in command_args or key == "activation_checkpointing":
                raise ConfigError(f"trainer_args: '{key}' is set from posttrain's config keys; "
                                  f"set it as a config key (--help lists them), not in trainer_args")
        kwargs = dict(settings)
        if "activation_checkpointing" in known:  # transformers >= 5 renamed it; the old name warns
            kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
        kwargs["report_to"] = self.trackers()
        kwargs["use_cpu"] = not torch.cuda.is_available()
        kwargs["logging_first_step"] = True
        kwargs.update(command_args)
        kwargs.update(self.trainer_args)
        return kwargs
