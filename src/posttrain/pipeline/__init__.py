"""Pipelines: named stages run in order, with a manifest that makes reruns resumable."""

from posttrain.pipeline.runner import run_pipeline

__all__ = ["run_pipeline"]
