"""``posttrain export``: a trained output as a standalone model directory, optionally on the Hub.

    posttrain export runs/sft --output_dir exported/sft [--push_to_hub true --hub_model_id you/sft]

The input is what a trainer left in its ``output_dir`` (sft, dpo, sdpo, grpo; a ``checkpoint-N``
or trigger's ``final/`` too): a LoRA adapter, which is merged into its base model (peft's
``merge_and_unload``), or a full model. ``output_dir`` receives safetensors weights, the tokenizer
and a model card (``README.md``) that says what the trainers recorded about the run:

* the base model: a LoRA adapter names it in ``adapter_config.json``;
* the training data, the training config and the command: when the input is a finished stage of a
  ``posttrain run`` pipeline, from that pipeline's stage, used only while the pipeline file still
  gives the fingerprint the manifest recorded (the file may have been edited since); else from
  ``posttrain_config.json``, which every training command writes next to its final model; without
  either the card says "not recorded";
* the final metrics: the last value of every metric in ``metrics.jsonl``, and, in a pipeline, the
  results of the ``eval`` stages that evaluated this model.

The export is built in a hidden sibling directory and renamed into place once complete (every file
flushed to disk first), so ``output_dir`` never holds half an export. ``output_dir`` must not exist
yet or be empty: an export never deletes files it did not write.

With ``push_to_hub`` the finished directory is uploaded with huggingface_hub's ``HfApi``. The token
is read from the ``HF_TOKEN`` environment variable and nowhere else; it is handed to ``HfApi`` and
never written to a file, a log or the card.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from posttrain.artifacts import write_text
from posttrain.config import config_field
from posttrain.data.jsonl import iter_jsonl
from posttrain.errors import ConfigError, PosttrainError
from posttrain.models import free_model, load_model, load_tokenizer
from posttrain.pipeline.runner import plan
from posttrain.registry import RUN_CONFIG_FILE
from posttrain.runtime import get_logger

log = get_logger(__name__)


@dataclass
class ExportConfig:
    model_dir: str = config_field(
        "", help="The trained output to export: a directory with a LoRA adapter (merged into its base) or a full model, "
        "e.g. an sft, dpo, sdpo or grpo output_dir."
    )
    output_dir: str = config_field("runs/export", help="Where the weights, tokenizer and model card go (must not exist yet, or be empty).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = config_field(
        "auto", help="Dtype of the exported weights; 'auto' keeps the saved one (a LoRA adapter is merged in its base model's)."
    )
    trust_remote_code: bool = config_field(False, help="Allow model code from the hub (off: only transformers' own code runs).")
    push_to_hub: bool = config_field(False, help="Upload the export to the Hub repository hub_model_id (token from HF_TOKEN only).")
    hub_model_id: str = config_field("", help="Hub repository for push_to_hub, e.g. you/my-model.")
    hub_private: bool = config_field(True, help="Create the Hub repository as private.")

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id (e.g. you/my-model)")


def run_export(config: ExportConfig) -> dict:
    """Check the input, the output and the token; merge or load; write the export; push it."""
    source = _check_model_dir(config.model_dir)
    out = Path(config.output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PosttrainError(f"output_dir {out} is not empty; export writes a new directory (remove it or choose another)")
    token = os.environ.get("HF_TOKEN") if config.push_to_hub else None
    if config.push_to_hub and not token:
        raise PosttrainError("push_to_hub needs a Hub token with write access in the HF_TOKEN environment variable")

    merged = (source / "adapter_config.json").exists()
    card = model_card(source, title=config.hub_model_id or out.name, load_as=config.hub_model_id or str(out), merged=merged)
    tokenizer = load_tokenizer(str(source), trust_remote_code=config.trust_remote_code)
    model = load_model(str(source), config.dtype, config.trust_remote_code)
    try:
        parameters = sum(p.numel() for p in model.parameters())
        model.config.use_cache = True  # training saves it off; the export is for generation
        _write_atomically(out, model, tokenizer, card)
    finally:
        free_model(model)
    log.info(f"exported {source} ({'LoRA adapter merged into its base' if merged else 'full model'}) to {out}")
    metrics = {"model_dir": str(source), "output_dir": str(out), "merged_lora": merged, "parameters": parameters}
    if config.push_to_hub:
        metrics["hub_url"] = _push(out, config.hub_model_id, config.hub_private, token)
    return metrics


def _check_model_dir(model_dir: str) -> Path:
    """The input as a path, or a one-line error naming it."""
    if not model_dir:
        raise ConfigError("model_dir is empty: give the trained output directory (posttrain export DIR or --model_dir DIR)")
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise PosttrainError(f"model_dir {model_dir} does not exist")
    if not path.is_dir() or not ((path / "config.json").exists() or (path / "adapter_config.json").exists()):
        raise PosttrainError(f"model_dir {model_dir} is not a trained model directory (no config.json or adapter_config.json)")
    return path


def _write_atomically(out: Path, model, tokenizer, card: str) -> None:
    """Write the export into a hidden sibling of ``out``, flush every file, then rename it to
    ``out`` (an empty ``out`` is replaced): a crash leaves no partial ``out``."""
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        staging.mkdir(parents=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_text(staging / "README.md", card)
        for path in staging.iterdir():
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        if out.exists():
            out.rmdir()  # empty: checked before the model was loaded
        os.rename(staging, out)
    except OSError as err:
        raise PosttrainError(f"cannot write {out}: {err.strerror}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _push(folder: Path, repo_id: str, private: bool, token: str) -> str:
    """Upload ``folder`` to the Hub repository ``repo_id`` (created if needed); returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="posttrain export")
    except (HfHubHTTPError, ConnectionError) as err:  # refused (token, permissions) or unreachable
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PosttrainError(f"exported to {folder}, but the push to {repo_id} failed: {reason}") from None
    log.info(f"pushed {folder} to the Hub as {repo_id}")
    return f"https://huggingface.co/{repo_id}"


# -- the model card ------------------------------------------------------------------------------


def model_card(model_dir: Path, title: str, load_as: str, merged: bool) -> str:
    """The card (``README.md``) of an export of ``model_dir``: base model, training data, training
    config and final metrics, each from the artifact that records it, or "not recorded"."""
    stage, evals = _pipeline_records(model_dir)
    if stage:
        command, config, source = stage.command, dataclasses.asdict(stage.config), f"pipeline stage `{stage.name}`"
    else:
        command, config, source = _run_record(model_dir)
    base = _adapter_base(model_dir) or (config or {}).get("model_name_or_path")
    data = None
    if config and config.get("dataset_mixture"):
        data = "; ".join(f"`{entry['name']}`, split `{entry.get('split', 'train')}`, weight {entry.get('weight', 1)}"
                         for entry in config["dataset_mixture"])
    elif config and config.get("dataset_name"):
        data = f"`{config['dataset_name']}`, split `{config.get('dataset_train_split', 'train')}`"

    front = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:", "- posttrain"]
    if command:
        front.append(f"- {command}")
    if base and not Path(base).expanduser().exists() and not base.startswith(("/", ".", "~")):
        front.append(f"base_model: {base}")  # the Hub links a hub id; a local path means nothing there
    lines = [*front, "---", "", f"# {title}", ""]
    kind = "a LoRA adapter merged into its base model" if merged else "a fully trained model"
    lines += [f"Exported by `posttrain export` from `{model_dir}` ({kind})."
              + (f" Trained with `posttrain {command}`." if command else ""), ""]
    not_recorded = f"not recorded (no {RUN_CONFIG_FILE} in the model directory, and not a finished pipeline stage)"
    lines += ["## Training", "", f"- base model: {f'`{base}`' if base else not_recorded}",
              f"- training data: {data or not_recorded}", ""]
    if config:
        lines += [f"Training config ({source}):", "", "```yaml",
                  yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    else:
        lines += [f"Training config: {not_recorded}.", ""]

    metrics = _final_metrics(model_dir)
    lines += ["## Final metrics", ""]
    if metrics:
        lines += ["Last logged value of each training metric (`metrics.jsonl`):", "", *_table(metrics), ""]
    else:
        lines += ["No training metrics recorded (`metrics.jsonl` is missing).", ""]
    for name, results in evals:
        lines += [f"`posttrain eval` of this model (pipeline stage `{name}`):", "", *_table(results), ""]

    lines += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'model = AutoModelForCausalLM.from_pretrained("{load_as}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{load_as}")', "```", "",
              f"or chat with it in a terminal: `posttrain chat {load_as}`.", ""]
    return "\n".join(lines)


def _run_record(model_dir: Path) -> tuple[str | None, dict | None, str | None]:
    """``(command, config, source)`` from the record a training command leaves next to its model
    (``posttrain_config.json``), or ``(None, None, None)`` without one."""
    path = model_dir / RUN_CONFIG_FILE
    try:
        record = json.loads(path.read_text())
        return record["command"], record["config"], f"`{RUN_CONFIG_FILE}`"
    except (OSError, ValueError, KeyError, TypeError):
        return None, None, None


def _adapter_base(model_dir: Path) -> str | None:
    path = model_dir / "adapter_config.json"
    return json.loads(path.read_text())["base_model_name_or_path"] if path.exists() else None


def _final_metrics(model_dir: Path) -> dict:
    """Each metric's last value in ``metrics.jsonl`` (rows hold different metrics: the loss every
    ``logging_steps``, the run's summary at the end)."""
    path = model_dir / "metrics.jsonl"
    final: dict = {}
    if path.exists():
        for _, row in iter_jsonl(path, allow_torn_tail=True):
            final.update(row)
    return final


def _table(values: dict) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    for key, value in values.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        rows.append(f"| {key} | {shown} |")
    return rows


def _pipeline_records(model_dir: Path) -> tuple:
    """``(stage, evals)`` when ``model_dir`` is a finished stage of a ``posttrain run`` pipeline
    whose file still gives the fingerprint its manifest recorded: the stage (command and validated
    config) and ``(name, metrics)`` of every finished eval stage of this model. Else
    ``(None, [])``: the card then says what was not recorded rather than guess."""
    model_dir = model_dir.resolve()  # its parent is the pipeline's run directory, and above that the output root
    manifest_path = model_dir.parent / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = {entry["name"]: entry for entry in manifest["stages"]}
        _, _, stages = plan(manifest["pipeline_file"], output_root=str(model_dir.parent.parent))
    except (OSError, ValueError, KeyError, TypeError, PosttrainError):
        return None, []  # no manifest (a run started by hand), or a pipeline file gone or changed

    def finished(stage) -> bool:
        entry = entries.get(stage.name, {})
        return entry.get("status") == "done" and entry.get("config_hash") == stage.fingerprint

    trained = next((s for s in stages if s.name == model_dir.name and finished(s)), None)
    if trained is None:
        return None, []
    evals = [
        (s.name, {k: v for k, v in entries[s.name]["metrics"].items() if k != "model"})  # "model": the path, known
        for s in stages
        if s.command == "eval" and Path(s.config.model_name_or_path) == trained.output_dir and finished(s)
    ]
    return trained, evals
