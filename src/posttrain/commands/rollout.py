"""``posttrain rollout``: N sampled completions per prompt, resumable, as JSONL.

Each output row (``<output_dir>/rollouts.jsonl``)::

    {"id": "task:arithmetic[12]", "prompt": "...", "completions": [...], "num_tokens": [...],
     "seed": 1234, "fields": {...the source row's other fields...}}

Rows are appended one batch of prompts at a time, each line in a single write, then fsync'd. A
rerun reads the ids already written and skips them, so an interrupted run loses at most the
batch in flight and never writes a duplicate; a torn last line is ignored and cut off. Nothing
accumulates: prompts are rendered a batch at a time and each batch's completions are written,
then dropped, so memory stays flat however many prompts there are. SIGTERM stops the run after the
batch in flight is written (:mod:`posttrain.preemption`); a rerun continues from there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from posttrain.artifacts import write_json
from posttrain.config import config_field
from posttrain.data.base_format import END
from posttrain.data.jsonl import append_jsonl, iter_jsonl
from posttrain.data.preference import ASSISTANT, HUMAN, hh_prompt, hh_to_messages
from posttrain.data.sources import DatasetReadArguments
from posttrain.data.chat import check_messages
from posttrain.errors import DataError, PosttrainError
from posttrain.generation.few_shot import few_shot_prompt, has_chat_markup
from posttrain.generation.sampling import generate
from posttrain.models import ModelArguments, check_model_source, free_model, load_model, load_tokenizer, render_prompt
from posttrain.preemption import Preempted, stop_requested, stoppable_loop
from posttrain.runtime import get_logger, seed_everything
from posttrain.tasks.sources import load_rows

log = get_logger(__name__)


@dataclass
class RolloutConfig(DatasetReadArguments, ModelArguments):
    output_dir: str = config_field("runs/rollouts", help="Where rollouts.jsonl and summary.json go.")
    dataset_name: str = config_field(
        "task:arithmetic", help="Prompts: task:<name>, or a .jsonl / hub dataset with a 'prompt' field (string or "
        "messages) or HH-RLHF 'chosen' transcripts (prompted through their last Assistant turn)."
    )
    dataset_split: str = config_field("train[:256]", help="Split, optionally sliced.")
    task_options: dict = config_field({}, help="Options of a task:<name> dataset.")
    num_samples: int = config_field(4, help="Completions per prompt (N).", ge=1)
    temperature: float = config_field(1.0, help="Sampling temperature.", gt=0)
    top_p: float = config_field(1.0, help="Nucleus sampling.", gt=0, le=1)
    max_new_tokens: int = config_field(64, help="Generation budget per completion.", ge=1)
    batch_size: int = config_field(16, help="Prompts per generate call (each with num_samples completions).", ge=1)
    few_shot: int = config_field(
        3, help="Base-model mode: Instruction/Response/END examples before each prompt; 0 for a model SFT-trained on the "
                "format, which reads zero-shot prompts (examples it never saw in training derail its END).", ge=0, le=4
    )
    backend: Literal["hf", "vllm"] = config_field("hf", help="hf: transformers generate (CPU/GPU); vllm: vLLM (GPU, if installed).")
    seed: int = config_field(0, help="Seeds sampling (each batch gets seed + its first prompt's index).")


def _prompt_rows(config: RolloutConfig) -> list[tuple[str, dict]]:
    """The rows to sample, each with its ``prompt``. An HH-RLHF row (``chosen``/``rejected``
    transcripts, no prompt) is prompted with its chosen transcript through the last
    ``"\\n\\nAssistant:"``: as chat messages, or in base-model mode as the transcript itself."""
    rows = load_rows(config.dataset_name, config.dataset_split, config.task_options,
                     dataset_config=config.dataset_config, data_files=config.data_files, columns=config.dataset_columns)
    for where, row in rows:
        if "prompt" not in row and isinstance(row.get("chosen"), str):
            prompt = hh_prompt(row["chosen"], where, "chosen")
            row["prompt"] = prompt if config.base_model_mode else hh_to_messages(prompt.removesuffix(ASSISTANT), where)
        if "prompt" not in row:
            raise DataError(f"{where}: missing field 'prompt'")
        if isinstance(row["prompt"], list):
            check_messages(row["prompt"], where, "prompt")
        elif not isinstance(row["prompt"], str):
            raise DataError(f"{where}: field 'prompt' must be a string or a list of messages")
    return rows


def _done_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {row["id"] for _, row in iter_jsonl(path, required={"id": str}, allow_torn_tail=True)}


def run_rollout(config: RolloutConfig) -> dict:
    seed_everything(config.seed)
    check_model_source(config.model_name_or_path)
    rows = _prompt_rows(config)
    out_path = Path(config.output_dir) / "rollouts.jsonl"
    done = _done_ids(out_path)
    todo = [(index, where, row) for index, (where, row) in enumerate(rows) if where not in done]
    log.info(f"rollouts: {len(rows)} prompts, {len(done)} already done, {len(todo)} to generate")
    summary = {"prompts": len(rows), "skipped_done": len(rows) - len(todo), "written": 0, "completions": 0, "contaminated": 0}
    if todo:
        tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
        rng = random.Random(config.seed)  # draws few-shot examples, in prompt order

        def render(row: dict) -> str:
            if config.base_model_mode and isinstance(row["prompt"], str) and row["prompt"].startswith(HUMAN):
                return row["prompt"]  # an HH-RLHF transcript is a completion prompt already
            if config.base_model_mode and config.few_shot:
                return few_shot_prompt(row["prompt"], rng, config.few_shot)
            return render_prompt(tokenizer, row["prompt"], config.base_model_mode, config.chat_template_kwargs)

        sample = _sampler(config, tokenizer)
        with stoppable_loop():
            _generate_batches(config, todo, render, sample, out_path, summary)
        sample.close()
    if summary["contaminated"]:
        log.warning(f"{summary['contaminated']} prompts got completions containing chat-template tokens (marked 'contaminated')")
    write_json(Path(config.output_dir) / "summary.json", summary)
    log.info(f"rollouts: wrote {summary['written']} rows ({summary['completions']} completions) to {out_path}")
    return summary


def _generate_batches(config: RolloutConfig, todo: list, render, sample, out_path: Path, summary: dict) -> None:
    """Sample and append ``todo`` a batch at a time; stop after a batch once SIGTERM has arrived."""
    for start in tqdm(range(0, len(todo), config.batch_size), desc="rollouts"):
        batch = todo[start : start + config.batch_size]
        batch_seed = config.seed + batch[0][0]
        groups, token_counts = sample([render(row) for _, _, row in batch], batch_seed)
        out_rows = []
        for (_, where, row), completions, num_tokens in zip(batch, groups, token_counts):
            contaminated = config.base_model_mode and any(has_chat_markup(c) for c in completions)
            summary["contaminated"] += int(contaminated)
            out_rows.append({
                "id": where,
                "prompt": row["prompt"],
                "completions": completions,
                "num_tokens": num_tokens,
                "seed": batch_seed,
                **({"contaminated": True} if contaminated else {}),
                "fields": {k: v for k, v in row.items() if k not in ("prompt", "completion")},
            })
        append_jsonl(out_path, out_rows)
        summary["written"] += len(out_rows)
        summary["completions"] += sum(len(r["completions"]) for r in out_rows)
        if stop_requested():
            done = summary["skipped_done"] + summary["written"]
            raise Preempted(f"stopped by SIGTERM with {done} of {summary['prompts']} prompts in {out_path}")


def _stop_strings(config: RolloutConfig) -> list[str] | None:
    """Where a base model's completion ends: at END after an Instruction/Response prompt, at the
    next human turn after an HH-RLHF transcript. A chat model ends its turn by itself."""
    return [END, HUMAN] if config.base_model_mode else None


class _HFSampler:
    def __init__(self, config: RolloutConfig, tokenizer):
        self.config, self.tokenizer = config, tokenizer
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = load_model(config.model_name_or_path, config.dtype, config.trust_remote_code, device=device)

    def __call__(self, prompts: list[str], seed: int) -> tuple[list[list[str]], list[list[int]]]:
        torch.manual_seed(seed)
        c = self.config
        return generate(
            self.model, self.tokenizer, prompts, num_return_sequences=c.num_samples, do_sample=True,
            temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens, batch_size=len(prompts),
            stop_strings=_stop_strings(c), desc="batch", return_token_counts=True,
        )

    def close(self) -> None:
        free_model(self.model)


class _VLLMSampler:
    def __init__(self, config: RolloutConfig, tokenizer):
        try:
            from vllm import LLM
        except ImportError:
            raise PosttrainError("backend 'vllm' needs the vllm package (pip install 'posttrain[gpu]') and a GPU") from None
        self.config = config
        self.llm = LLM(model=config.model_name_or_path, trust_remote_code=config.trust_remote_code, seed=config.seed)

    def __call__(self, prompts: list[str], seed: int) -> tuple[list[list[str]], list[list[int]]]:
        from vllm import SamplingParams

        c = self.config
        params = SamplingParams(n=c.num_samples, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_new_tokens,
                                seed=seed, stop=_stop_strings(c))
        results = self.llm.generate(prompts, params, use_tqdm=False)
        return [[o.text for o in r.outputs] for r in results], [[len(o.token_ids) for o in r.outputs] for r in results]

    def close(self) -> None:
        del self.llm


def _sampler(config: RolloutConfig, tokenizer):
    return _VLLMSampler(config, tokenizer) if config.backend == "vllm" else _HFSampler(config, tokenizer)
