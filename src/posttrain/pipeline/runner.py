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
        launcher: {num_processes: 2}     # optional, training stages: several processes
                                         # (posttrain.pipeline.launcher)

``manifest.json`` (in ``<output_root>/<name>/``) records every stage's ``status`` (``pending``,
``running``, ``done``, ``failed``, ``interrupted``: stopped by SIGTERM, see
:mod:`posttrain.preemption`), ``config_hash``, ``artifacts`` and ``metrics``. On a rerun:

* a ``done`` stage whose fingerprint is unchanged is skipped;
* a stage whose fingerprint changed starts over in an emptied directory (the fingerprint covers
  its command, its config and the fingerprints of the stages it references, so editing an
  upstream stage reruns everything downstream of it; it does not cover the output root, so a
  run directory can be moved or copied and resumed where it is);
* a ``running`` (the process died), ``interrupted`` or ``failed`` stage is resumed from its last
  checkpoint.

One run at a time: a second ``posttrain run`` into the same output root is refused while the
first holds its lock (:mod:`posttrain.pipeline.lock`).

A stage's ``config_hash`` is that of the output in its directory: it takes the new fingerprint
only when the stage starts, so a run that stops earlier leaves a changed stage marked changed.

Every stage config is validated before the first stage runs. At the end ``report.md`` (with PNG
plots) and ``summary.json`` are written next to the manifest (:mod:`posttrain.pipeline.report`).

Choosing stages (``posttrain run PIPELINE.yaml --list | --only STAGE | --from STAGE``):

* ``--list`` (:func:`pipeline_status`) prints every stage with its command, its status, its wall
  time (``finished_at - started_at`` of its last finished run) and its output directory; it runs
  nothing. The status is the manifest's (``pending`` if the stage never ran), or ``changed`` when
  its fingerprint differs from the one it last ran with, or ``missing`` when it is done but its
  output directory was deleted; a plain run redoes either.
* ``--only a,b`` (repeatable; ``only=[...]``) runs just those stages, each starting over in an
  emptied directory even if it is done. Every stage they reference must be ``done`` (and not
  ``changed``) or be selected too, else nothing runs. Stages that use their output are not
  rerun: use ``--from`` for that.
* ``--from b`` (``start_from=...``) reruns ``b`` and every later stage, each starting over; every
  earlier stage must be ``done`` and is skipped.

Stages left out by ``--only`` or ``--from`` keep their manifest entries as they were.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.artifacts import write_json
from posttrain.config import load_config, read_yaml
from posttrain.errors import ConfigError, PosttrainError
from posttrain.pipeline.launcher import Launcher, run_launched
from posttrain.pipeline.lock import pipeline_lock
from posttrain.pipeline.report import wall_seconds, write_report
from posttrain.preemption import Preempted, stop_requested
from posttrain.registry import COMMANDS
from posttrain.runtime import get_logger
from posttrain.trainers.settings import TrainingSettings

log = get_logger(__name__)

_REFERENCE = re.compile(r"\$\{([\w-]+)\}")
_STAGE_KEYS = {"name", "command", "config", "config_file", "launcher"}


@dataclass
class Stage:
    name: str
    command: str
    config: Any  # the validated config dataclass
    output_dir: Path
    fingerprint: str
    upstream: tuple[str, ...] = ()  # the stages its config references, in file order
    values: dict | None = None  # the config as keys and values (references resolved), for a launcher
    launcher: Launcher | None = None  # several processes (see posttrain.pipeline.launcher), else in-process


@dataclass
class StageStatus:
    """One row of :func:`pipeline_status`."""

    name: str
    command: str
    status: str  # pending | running | done | failed | interrupted (the manifest's), or changed | missing
    output_dir: Path
    wall_time_s: int | None  # finished_at - started_at of its last finished run, else None


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
    for key in ("name", "output_root"):
        if key in spec and not isinstance(spec[key], str):
            raise ConfigError(f"{pipeline_path}: '{key}' must be a string, got {spec[key]!r}")
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
        if not isinstance(raw.get("config") or {}, dict):
            raise ConfigError(f"{where}: 'config' must be a mapping of config keys")
        if not isinstance(raw.get("config_file") or "", str):
            raise ConfigError(f"{where}: 'config_file' must be a path")
        values: dict[str, Any] = {}
        if raw.get("config_file"):
            values.update(read_yaml(pipeline_path.parent / raw["config_file"]))
        values.update(raw.get("config") or {})
        written = dict(values)  # as in the file: ${stage} references, not paths
        used: set[str] = set()
        values = _substitute(values, dirs, where, used)
        output_dir = root / stage_name
        values[command.output_field] = str(output_dir)
        try:
            config = load_config(command.config_cls, values=values)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        launcher = None
        if raw.get("launcher") is not None:
            if not issubclass(command.config_cls, TrainingSettings):
                raise ConfigError(f"{where}: only training stages take a 'launcher'; {command_name} runs in one process")
            launcher = Launcher.parse(raw["launcher"], where, pipeline_path.parent)
        # what the stage computes, not where it lives: a run directory moved or copied elsewhere
        # (another disk, another --output-root) keeps its finished stages
        written.pop(command.output_field, None)
        payload = json.dumps(
            {"command": command_name, "config": written, "upstream": sorted(fingerprints[u] for u in used),
             # how many processes share the batch changes the global batch; where they run does not
             **({"num_processes": launcher.num_processes} if launcher else {})},
            sort_keys=True,
            default=str,
        )
        fingerprints[stage_name] = hashlib.sha256(payload.encode()).hexdigest()[:16]
        dirs[stage_name] = output_dir
        upstream = tuple(s.name for s in stages if s.name in used)
        stages.append(Stage(stage_name, command_name, config, output_dir, fingerprints[stage_name], upstream, values, launcher))
    return name, root, stages


def _load_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise PosttrainError(f"{path} is not valid JSON; delete it to start the pipeline over") from None


def _previous_entries(root: Path) -> dict[str, dict]:
    """Stage name -> its entry in the manifest under ``root`` (empty before the first run)."""
    return {entry["name"]: entry for entry in _load_manifest(root / "manifest.json").get("stages", [])}


def _state(stage: Stage, entry: dict | None) -> str:
    """A stage's state against its manifest entry: the entry's status, or ``changed`` (it ran with
    another fingerprint) or ``missing`` (done, but its output directory is gone)."""
    status = (entry or {}).get("status", "pending")
    if status != "pending" and entry.get("config_hash") != stage.fingerprint:
        return "changed"
    if status == "done" and not stage.output_dir.exists():
        return "missing"
    return status


_NOT_DONE = {
    "pending": "it has not run",
    "running": "its run died",
    "interrupted": "it was stopped by SIGTERM",
    "failed": "it failed",
    "changed": "its config changed since it ran",
    "missing": "its output directory is missing",
}


def _wall_time(entry: dict | None) -> int | None:
    if not entry or entry.get("status") != "done":
        return None
    seconds = wall_seconds(entry)
    return None if seconds is None else int(seconds)


def pipeline_status(pipeline_path: str | Path, output_root: str | None = None) -> list[StageStatus]:
    """Every stage of a (validated) pipeline, in order, with its state from the manifest; runs nothing."""
    _, root, stages = plan(pipeline_path, output_root)
    previous = _previous_entries(root)
    return [
        StageStatus(s.name, s.command, _state(s, previous.get(s.name)), s.output_dir, _wall_time(previous.get(s.name)))
        for s in stages
    ]


def format_status(rows: list[StageStatus]) -> str:
    """``--list``'s table: stage, command, status, wall time, output directory."""
    table = [("stage", "command", "status", "wall", "output_dir")]
    for row in rows:
        wall = "-" if row.wall_time_s is None else f"{row.wall_time_s}s"
        table.append((row.name, row.command, row.status, wall, str(row.output_dir)))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[4] for line in table)


def _select(
    stages: list[Stage], previous: dict[str, dict], only: Iterable[str] | None, start_from: str | None
) -> tuple[set[str], set[str]]:
    """For ``--only`` / ``--from``: (stages to rerun from scratch, stages to leave alone).

    Raises before anything runs on an unknown stage name or an upstream stage that is not done.
    """
    if only is None and start_from is None:
        return set(), set()
    if only is not None and start_from is not None:
        raise ConfigError("--only and --from cannot be combined")
    names = [s.name for s in stages]

    def known(name: str, flag: str) -> str:
        if name not in names:
            raise ConfigError(f"{flag}: unknown stage '{name}' (stages: {', '.join(names)})")
        return name

    by_name = {s.name: s for s in stages}
    if start_from is not None:
        start = names.index(known(start_from, "--from"))
        for stage in stages[:start]:
            state = _state(stage, previous.get(stage.name))
            if state != "done":
                raise ConfigError(
                    f"--from {start_from}: earlier stage '{stage.name}' is not done ({_NOT_DONE.get(state, state)}); "
                    f"use --from {stage.name}, or run without --from"
                )
        return set(names[start:]), set(names[:start])

    if isinstance(only, str):
        only = [only]
    selected = {known(name, "--only") for name in only}
    if not selected:
        raise ConfigError("--only: name at least one stage")
    for name in names:  # file order, so the first missing upstream is reported
        if name not in selected:
            continue
        for upstream in by_name[name].upstream:
            state = _state(by_name[upstream], previous.get(upstream))
            if upstream not in selected and state != "done":
                raise ConfigError(
                    f"--only {name}: upstream stage '{upstream}' is not done ({_NOT_DONE.get(state, state)}); "
                    f"run it first or add it to --only"
                )
    return selected, set(names) - selected


def run_pipeline(
    pipeline_path: str | Path,
    output_root: str | None = None,
    *,
    only: Iterable[str] | None = None,
    start_from: str | None = None,
) -> dict:
    """Run (or resume) a pipeline; returns the final manifest.

    ``only`` (stage names) runs just those stages and ``start_from`` (a stage name) reruns that stage
    and every later one; either way the chosen stages start over. See the module docstring.
    """
    name, root, stages = plan(pipeline_path, output_root)
    # a bad --only/--from fails before anything is created; under the lock it is checked again
    # against the manifest as it is then
    _select(stages, _previous_entries(root), only, start_from)
    with pipeline_lock(root):
        return _run_stages(pipeline_path, name, root, stages, only, start_from)


def _run_stages(
    pipeline_path: str | Path, name: str, root: Path, stages: list[Stage], only: Iterable[str] | None, start_from: str | None
) -> dict:
    manifest_path = root / "manifest.json"
    previous = _previous_entries(root)
    rerun, left_alone = _select(stages, previous, only, start_from)
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
    finished = set()
    for stage, entry in zip(stages, manifest["stages"]):
        before = previous.get(stage.name)
        if stage.name in left_alone and before:
            entry.clear()
            entry.update(before)  # not run this time: its entry stays as it was
        elif stage.name not in rerun and _state(stage, before) == "done":  # a deleted output is redone
            entry.update({k: before[k] for k in ("status", "artifacts", "metrics", "started_at", "finished_at") if k in before})
            finished.add(stage.name)
        elif before is not None and stage.output_dir.exists():
            # Until it starts, the entry describes what is on disk (the old config's output), so a
            # run that stops before reaching this stage cannot make that output look current.
            entry.update(status=before.get("status", "pending"), config_hash=before.get("config_hash"))
    write_json(manifest_path, manifest)

    for stage, entry in zip(stages, manifest["stages"]):
        if stage.name in left_alone:
            log.info(f"stage '{stage.name}': left out by --only/--from ({_state(stage, entry)}), skipping")
            continue
        if stage.name in finished:
            log.info(f"stage '{stage.name}': done already, skipping")
            continue
        before = previous.get(stage.name)
        same_config = before is not None and before.get("config_hash") == stage.fingerprint
        if stage.name in rerun and stage.output_dir.exists():
            log.info(f"stage '{stage.name}': rerun requested, starting over in {stage.output_dir}")
            shutil.rmtree(stage.output_dir)
        elif not same_config and stage.output_dir.exists():
            log.info(f"stage '{stage.name}': config changed, starting over in {stage.output_dir}")
            shutil.rmtree(stage.output_dir)
        if same_config and stage.name not in rerun and hasattr(stage.config, "resume"):
            stage.config.resume = True  # interrupted or failed with the same config: continue it
            log.info(f"stage '{stage.name}': resuming ({before.get('status')} before)")
        log.info(f"stage '{stage.name}' ({stage.command}) -> {stage.output_dir}")
        entry.update(status="running", config_hash=stage.fingerprint, started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(manifest_path, manifest)
        try:
            if stop_requested():  # SIGTERM arrived as the last stage finished: stop before this one
                raise Preempted("stopped by SIGTERM before it started")
            metrics = _execute(stage, root)
        except Preempted as err:
            entry.update(status="interrupted", error=str(err))
            write_json(manifest_path, manifest)
            raise Preempted(f"stage '{stage.name}' {err}") from None
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
    report = write_report(root, started_from=_started_from(stages))
    log.info(f"pipeline '{name}' finished; manifest at {manifest_path}, report at {report}")
    return manifest


def _execute(stage: Stage, root: Path) -> dict:
    """Run one stage: in this process, or under its launcher (the same config, resume included)."""
    if stage.launcher is None:
        return COMMANDS[stage.command].execute(stage.config)
    log.info(f"stage '{stage.name}': starting {stage.launcher.describe()}")
    values = {**stage.values, **({"resume": stage.config.resume} if hasattr(stage.config, "resume") else {})}
    return run_launched(stage.command, values, stage.launcher, root / ".launch" / stage.name)


def _started_from(stages: list[Stage]) -> dict[str, str]:
    """Training stage -> the stage whose model it started from (for the report's verdicts)."""
    by_dir = {s.output_dir: s.name for s in stages}
    pairs = {}
    for stage in stages:
        source = getattr(stage.config, "model_name_or_path", None)
        if stage.command != "eval" and source and Path(source) in by_dir:
            pairs[stage.name] = by_dir[Path(source)]
    return pairs
