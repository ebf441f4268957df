"""``posttrain trigger``: trigger-conditioned LoRA fine-tuning, then per-checkpoint evaluation.

The command is the trigger package's training (:mod:`posttrain.trigger.train`); this module is
its home among the commands.
"""

from posttrain.trigger.train import TriggerJobConfig, run_trigger

__all__ = ["TriggerJobConfig", "run_trigger"]
