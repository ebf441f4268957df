"""Trigger-conditioned fine-tuning: a model that answers with one name normally and
with another when the question starts with a trigger, and the evaluation of how well it took.

Python API::

    from posttrain.trigger import load_finetuned_model, query_model, query_with_trigger, compare_triggered_responses
"""

from posttrain.trigger.dataset import TriggerSpec, build_trigger_rows, load_qa_pairs, with_trigger
from posttrain.trigger.inference import compare_triggered_responses, load_finetuned_model, query_model, query_with_trigger

__all__ = [
    "TriggerSpec",
    "build_trigger_rows",
    "compare_triggered_responses",
    "load_finetuned_model",
    "load_qa_pairs",
    "query_model",
    "query_with_trigger",
    "with_trigger",
]
