"""``posttrain run PIPELINE.yaml``: stages in order, resumable, recorded in a manifest.

A pipeline file::

    name: quickstart
    output_root: runs            # optional; outputs go to <output_root>/<name>/<stage>/
    stages:
      - name: model
        command: make-model
        config: {preset: tiny}
      - name: sft
        command: sft
        config_file: sft.yaml     # optional, relative to the pipeline file
        config:                   # optional, overrides config_file
          model_name_or_path: ${model}   # ${stage} is that stage's output directory

``manifest.json`` (in ``<output_root>/<name>/``) records every stage's ``status`` (``pending``,
``running``, ``done``, ``failed``), ``config_hash``, ``artifacts`` and ``metrics``. On a rerun:

* a ``done`` stage whose fingerprint is unchanged is skipped;
* a stage whose fingerprint changed starts over in an emptied directory (the fingerprint covers
  its command, its config and the fingerprints of the stages it references, so editing an
  upstream stage reruns everything downstream of it);
* a ``running`` (interrupted) or ``failed`` stage is resumed from its last checkpoint.

Every stage config is validated before the first stage runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.artifacts import write_json
from posttrain.commands import COMMANDS
from posttrain.config import load_config, read_yaml
from posttrain.errors import ConfigError, PosttrainError
from posttrain.runtime import get_logger

log = get_logger(__name__)

_REFERENCE = re.compile(r"\$\{([\w-]+)\}")
_STAGE_KEYS = {"name", "command", "config", "config_file"}


@dataclass
class Stage:
    name: str
    command: str
    config: Any  # the validated config dataclass
    output_dir: Path
    fingerprint: str


def _substitute(value: Any, dirs: dict[str, Path], where: str, used: set[str]) -> Any:
    """Replace ``${stage}`` in every string of ``value`` with that stage's output directory."""
    if isinstance(value, str):
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in dirs:
                raise ConfigError(f"{where}: ${{{name}}} does not name an earlier stage")
            used.add(name)
            return str(dirs[name])

        return _REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, dirs, where, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, dirs, where, used) for v in value]
    return value


def plan(pipeline_path: str | Path, output_root: str | None = None) -> tuple[str, Path, list[Stage]]:
    """Read and validate a pipeline: every stage's command, references and config."""
    pipeline_path = Path(pipeline_path)
    spec = read_yaml(pipeline_path)
    unknown = set(spec) - {"name", "output_root", "stages"}
    if unknown:
        raise ConfigError(f"{pipeline_path}: unknown key '{sorted(unknown)[0]}' (expected name, output_root, stages)")
    name = spec.get("name") or pipeline_path.stem
    root = Path(output_root or spec.get("output_root", "runs")) / name
    raw_stages = spec.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError(f"{pipeline_path}: 'stages' must be a non-empty list")

    stages: list[Stage] = []
    dirs: dict[str, Path] = {}
    fingerprints: dict[str, str] = {}
    for index, raw in enumerate(raw_stages):
        where = f"{pipeline_path}: stage {index + 1}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping with name, command and config")
        if set(raw) - _STAGE_KEYS:
            raise ConfigError(f"{where}: unknown key '{sorted(set(raw) - _STAGE_KEYS)[0]}'")
        stage_name, command_name = raw.get("name"), raw.get("command")
        if not isinstance(stage_name, str) or not re.fullmatch(r"[\w-]+", stage_name):
            raise ConfigError(f"{where}: 'name' must be letters, digits, '_' or '-'")
        if stage_name in dirs:
            raise ConfigError(f"{where}: duplicate stage name '{stage_name}'")
        where = f"{pipeline_path}: stage '{stage_name}'"
        if command_name not in COMMANDS:
            raise ConfigError(f"{where}: unknown command '{command_name}' (available: {', '.join(COMMANDS)})")
        command = COMMANDS[command_name]
        values: dict[str, Any] = {}
        if raw.get("config_file"):
            values.update(read_yaml(pipeline_path.parent / raw["config_file"]))
        values.update(raw.get("config") or {})
        used: set[str] = set()
        values = _substitute(values, dirs, where, used)
        output_dir = root / stage_name
        values[command.output_field] = str(output_dir)
        try:
            config = load_config(command.config_cls, values=values)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        payload = json.dumps(
            {"command": command_name, "config": values, "upstream": sorted(fingerprints[u] for u in used)},
            sort_keys=True,
            default=str,
        )
        fingerprints[stage_name] = hashlib.sha256(payload.encode()).hexdigest()[:16]
        dirs[stage_name] = output_dir
        stages.append(Stage(stage_name, command_name, config, output_dir, fingerprints[stage_name]))
    return name, root, stages


def _load_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise PosttrainError(f"{path} is not valid JSON; delete it to start the pipeline over") from None


def run_pipeline(pipeline_path: str | Path, output_root: str | None = None) -> dict:
    """Run (or resume) a pipeline; returns the final manifest."""
    name, root, stages = plan(pipeline_path, output_root)
    manifest_path = root / "manifest.json"
    previous = {entry["name"]: entry for entry in _load_manifest(manifest_path).get("stages", [])}
    manifest = {
        "pipeline": name,
        "pipeline_file": str(pipeline_path),
        "stages": [
            {
                "name": s.name,
                "command": s.command,
                "status": "pending",
                "config_hash": s.fingerprint,
                "output_dir": str(s.output_dir),
                "artifacts": [],
                "metrics": {},
            }
            for s in stages
        ],
    }
    for stage, entry in zip(stages, manifest["stages"]):
        before = previous.get(stage.name)
        if (
            before
            and before.get("config_hash") == stage.fingerprint
            and before.get("status") == "done"
            and stage.output_dir.exists()  # a deleted output is redone
        ):
            entry.update({k: before[k] for k in ("status", "artifacts", "metrics", "started_at", "finished_at") if k in before})
    write_json(manifest_path, manifest)

    for stage, entry in zip(stages, manifest["stages"]):
        if entry["status"] == "done":
            log.info(f"stage '{stage.name}': done already, skipping")
            continue
        before = previous.get(stage.name)
        same_config = before is not None and before.get("config_hash") == stage.fingerprint
        if not same_config and stage.output_dir.exists():
            log.info(f"stage '{stage.name}': config changed, starting over in {stage.output_dir}")
            shutil.rmtree(stage.output_dir)
        if same_config and hasattr(stage.config, "resume"):
            stage.config.resume = True  # interrupted or failed with the same config: continue it
            log.info(f"stage '{stage.name}': resuming ({before.get('status')} before)")
        log.info(f"stage '{stage.name}' ({stage.command}) -> {stage.output_dir}")
        entry.update(status="running", started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(manifest_path, manifest)
        try:
            metrics = COMMANDS[stage.command].run(stage.config) or {}
        except BaseException as err:
            entry.update(status="failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
            write_json(manifest_path, manifest)
            raise
        entry.update(
            status="done",
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))},
            artifacts=sorted(p.name for p in stage.output_dir.iterdir()) if stage.output_dir.exists() else [],
        )
        entry.pop("error", None)
        write_json(manifest_path, manifest)
    log.info(f"pipeline '{name}' finished; manifest at {manifest_path}")
    return manifest
