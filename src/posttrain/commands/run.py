"""``posttrain run PIPELINE.yaml``: a pipeline of stages (:mod:`posttrain.pipeline`), resumable.

A rerun skips finished stages and resumes an interrupted one. ``--list`` prints every stage's
status and runs nothing; ``--only`` (repeated or comma-separated) and ``--from`` start parts of
the pipeline over.
"""

from __future__ import annotations

from posttrain.errors import PosttrainError
from posttrain.pipeline import format_status, pipeline_status, run_pipeline


def run(
    pipeline: str,
    output_root: str | None = None,
    *,
    list_stages: bool = False,
    only: list[str] | None = None,
    start_from: str | None = None,
) -> None:
    """Run ``pipeline`` (or, with ``list_stages``, print its status); ``only`` holds the values of
    ``--only``, each a stage name or a comma-separated list of them."""
    if list_stages:
        if only is not None or start_from is not None:
            raise PosttrainError("--list runs nothing; it cannot be combined with --only or --from")
        print(format_status(pipeline_status(pipeline, output_root)))
        return
    stages = None if only is None else [name.strip() for value in only for name in value.split(",") if name.strip()]
    run_pipeline(pipeline, output_root, only=stages, start_from=start_from)
