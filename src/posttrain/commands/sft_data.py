"""``posttrain sft-data``: base-model rollouts -> filtered, de-duplicated SFT rows for
``posttrain sft --base_model_mode`` (Instruction/Response/END).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from posttrain.artifacts import write_json
from posttrain.config import config_field
from posttrain.data.jsonl import write_jsonl
from posttrain.data.rollouts import checked_rollouts
from posttrain.errors import ConfigError
from posttrain.generation.few_shot import has_chat_markup
from posttrain.runtime import get_logger
from posttrain.tasks import get_task

log = get_logger(__name__)


@dataclass
class SFTDataConfig:
    rollouts: str = config_field("", help="rollouts.jsonl from a base model (posttrain rollout with base_model_mode).")
    output_dir: str = config_field("runs/sft-data", help="Where sft.jsonl and summary.json go.")
    min_words: int = config_field(3, help="Drop completions with fewer words.", ge=0)
    max_per_prompt: int = config_field(1, help="Keep at most this many distinct completions per prompt.", ge=1)
    verify_task: str | None = config_field(
        None, help="Keep only completions this task's verifier accepts (rejection sampling), e.g. arithmetic."
    )
    task_options: dict = config_field({}, help="Options of verify_task.")


def run_sft_data(config: SFTDataConfig) -> dict:
    """Base-model rollouts -> ``{"prompt", "completion"}`` rows for ``posttrain sft --base_model_mode``:
    chat-contaminated and short completions dropped, duplicates (after whitespace and case
    normalisation) removed, and with ``verify_task`` the completions its verifier rejects."""
    if not config.rollouts:
        raise ConfigError("config key 'rollouts' is empty")
    task = get_task(config.verify_task, **config.task_options) if config.verify_task else None
    rollouts = [row for _, row in checked_rollouts(config.rollouts, required={"prompt": str, "completions": list})]
    seen: set[str] = set()
    counts = Counter()
    rows = []
    for row in rollouts:
        kept = 0
        for completion in row["completions"]:
            text = completion.strip()
            key = " ".join(text.lower().split())
            if has_chat_markup(text):
                counts["dropped_chat_markup"] += 1
            elif len(text.split()) < config.min_words:
                counts["dropped_too_short"] += 1
            elif task is not None and task.score(row["prompt"], text, **row.get("fields", {}))[0] < 1.0:
                counts["dropped_incorrect"] += 1
            elif key in seen:
                counts["dropped_duplicate"] += 1
            elif kept >= config.max_per_prompt:
                counts["dropped_over_max_per_prompt"] += 1
            else:
                seen.add(key)
                rows.append({"prompt": row["prompt"], "completion": text})
                kept += 1
    write_jsonl(Path(config.output_dir) / "sft.jsonl", rows)
    summary = {"rollout_rows": len(rollouts), "written": len(rows), **counts}
    write_json(Path(config.output_dir) / "summary.json", summary)
    log.info("sft-data: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return summary
