"""``posttrain trigger-eval``: activation, fidelity and leakage of every checkpoint of a trigger
run.

The command is the trigger package's evaluation (:mod:`posttrain.trigger.evaluate`); this module
is its home among the commands.
"""

from posttrain.trigger.evaluate import TriggerEvalConfig, run_trigger_eval

__all__ = ["TriggerEvalConfig", "run_trigger_eval"]
