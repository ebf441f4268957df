"""Pipelines: named stages run in order, with a manifest that makes reruns resumable."""

from posttrain.pipeline.runner import StageStatus, format_status, pipeline_status, run_pipeline

__all__ = ["StageStatus", "format_status", "pipeline_status", "run_pipeline"]
