"""posttrain run: ordering, references, manifest, skip / rerun / resume, --list / --only / --from."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from posttrain.config import config_field
from posttrain.errors import ConfigError
from posttrain.pipeline.runner import format_status, pipeline_status, plan, run_pipeline
from posttrain.preemption import Preempted, sigterm_stops_cleanly, stoppable_loop
from posttrain.registry import COMMANDS, Command


@dataclass
class EchoConfig:
    output_dir: str = config_field("", help="out")
    source: str = config_field("", help="an upstream directory")
    value: int = config_field(0, help="a number", ge=0)
    resume: bool = config_field(False, help="resume flag")


CALLS: list[tuple[str, int, bool]] = []


def echo(config: EchoConfig) -> dict:
    """Writes its value; fails when value == 13 (to test failure handling), is stopped by SIGTERM
    in its loop when value == 15, and gets a SIGTERM as it finishes when value == 16."""
    CALLS.append((Path(config.output_dir).name, config.value, config.resume))
    if config.value == 13:
        raise RuntimeError("unlucky")
    if config.value == 15 and not config.resume:
        raise Preempted("stopped by SIGTERM after step 1 of 2")
    if config.value == 16 and not config.resume:
        with stoppable_loop():
            os.kill(os.getpid(), signal.SIGTERM)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.output_dir) / "value.txt").write_text(str(config.value))
    return {"value": config.value, "accuracy": config.value / 100}


@dataclass(frozen=True)
class InlineCommand(Command):
    """A command given by objects instead of import paths (for tests)."""

    config_obj: type = EchoConfig
    run_obj: object = None

    @property
    def config_cls(self):
        return self.config_obj

    @property
    def run(self):
        return self.run_obj


@pytest.fixture
def echo_command(monkeypatch):
    CALLS.clear()
    monkeypatch.setitem(COMMANDS, "echo", InlineCommand("echo", "test", "", "", "output_dir", run_obj=echo))


def write_pipeline(path: Path, a=1, b=2, extra="") -> Path:
    path.write_text(
        f"""name: demo
stages:
  - name: first
    command: echo
    config: {{value: {a}}}
  - name: second
    command: echo
    config: {{value: {b}, source: "${{first}}"}}
  - name: third
    command: echo
    config: {{value: 5}}
{extra}"""
    )
    return path


def test_stages_run_in_order_with_references_and_manifest(tmp_path, echo_command):
    pipeline = write_pipeline(tmp_path / "p.yaml")
    manifest = run_pipeline(pipeline, output_root=str(tmp_path / "runs"))
    assert [c[0] for c in CALLS] == ["first", "second", "third"]
    saved = json.loads((tmp_path / "runs" / "demo" / "manifest.json").read_text())
    assert saved == manifest
    assert [s["status"] for s in saved["stages"]] == ["done", "done", "done"]
    second = saved["stages"][1]
    assert second["metrics"] == {"value": 2, "accuracy": 0.02}
    assert second["artifacts"] == ["value.txt"]
    assert second["output_dir"] == str(tmp_path / "runs" / "demo" / "second")
    _, _, stages = plan(pipeline, str(tmp_path / "runs"))
    assert stages[1].config.source == str(tmp_path / "runs" / "demo" / "first")


def test_rerun_skips_done_and_reruns_changed_and_downstream(tmp_path, echo_command):
    runs = str(tmp_path / "runs")
    run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=runs)
    CALLS.clear()
    run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=runs)
    assert CALLS == []  # everything done, nothing rerun
    (tmp_path / "runs" / "demo" / "first" / "stale.txt").write_text("old")
    run_pipeline(write_pipeline(tmp_path / "p.yaml", a=7), output_root=runs)
    # first changed; second references it and reruns; third is independent and is skipped
    assert [c[:2] for c in CALLS] == [("first", 7), ("second", 2)]
    assert not (tmp_path / "runs" / "demo" / "first" / "stale.txt").exists()  # started over


def test_a_changed_stage_after_a_failure_starts_over_later_instead_of_resuming_stale_output(tmp_path, echo_command):
    """A run that fails before reaching a changed stage must not record that stage as if its
    directory held output of the new config: the next run would resume the old output."""
    runs = str(tmp_path / "runs")
    path = tmp_path / "p.yaml"
    run_pipeline(write_pipeline(path), output_root=runs)
    third = tmp_path / "runs" / "demo" / "third"
    (third / "stale.txt").write_text("made with value 5")

    def pipeline(b: int) -> Path:  # third's value changes from 5 to 8
        path.write_text(write_pipeline(path, b=b).read_text().replace("value: 5", "value: 8"))
        return path

    with pytest.raises(RuntimeError, match="unlucky"):
        run_pipeline(pipeline(b=13), output_root=runs)  # second fails; third is never reached
    assert {r.name: r.status for r in pipeline_status(pipeline(b=13), output_root=runs)}["third"] == "changed"
    CALLS.clear()
    run_pipeline(pipeline(b=3), output_root=runs)
    assert ("third", 8, False) in CALLS  # started over with the new config, not resumed
    assert not (third / "stale.txt").exists() and (third / "value.txt").read_text() == "8"


def test_failed_stage_is_recorded_and_resumed_on_rerun(tmp_path, echo_command):
    runs = str(tmp_path / "runs")
    with pytest.raises(RuntimeError, match="unlucky"):
        run_pipeline(write_pipeline(tmp_path / "p.yaml", b=13), output_root=runs)
    manifest = json.loads((tmp_path / "runs" / "demo" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done", "failed", "pending"]
    assert manifest["stages"][1]["error"] == "unlucky"
    CALLS.clear()
    with pytest.raises(RuntimeError):
        run_pipeline(write_pipeline(tmp_path / "p.yaml", b=13), output_root=runs)
    assert CALLS == [("second", 13, True)]  # same config: resumed, first skipped


def test_interrupted_stage_resumes(tmp_path, echo_command):
    runs = tmp_path / "runs"
    run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=str(runs))
    manifest_path = runs / "demo" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["stages"][1]["status"] = "running"  # what a kill -9 leaves behind
    manifest_path.write_text(json.dumps(manifest))
    CALLS.clear()
    run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=str(runs))
    assert CALLS == [("second", 2, True)]


def test_a_run_directory_moved_elsewhere_keeps_its_finished_stages(tmp_path, echo_command):
    import shutil

    run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=str(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    CALLS.clear()
    manifest = run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=str(tmp_path / "b"))
    assert CALLS == [] and all(s["status"] == "done" for s in manifest["stages"])
    assert manifest["stages"][1]["output_dir"] == str(tmp_path / "b" / "demo" / "second")
    # while a changed config still reruns the stage
    run_pipeline(write_pipeline(tmp_path / "p.yaml", b=3), output_root=str(tmp_path / "b"))
    assert CALLS == [("second", 3, False)]


def test_a_stage_stopped_by_sigterm_is_recorded_as_interrupted_and_resumed(tmp_path, echo_command):
    runs = tmp_path / "runs"
    with pytest.raises(Preempted, match="stage 'second' stopped by SIGTERM after step 1 of 2"):
        run_pipeline(write_pipeline(tmp_path / "p.yaml", b=15), output_root=str(runs))
    manifest = json.loads((runs / "demo" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done", "interrupted", "pending"]
    assert [row.status for row in pipeline_status(tmp_path / "p.yaml", str(runs))] == ["done", "interrupted", "pending"]
    CALLS.clear()
    run_pipeline(write_pipeline(tmp_path / "p.yaml", b=15), output_root=str(runs))
    assert [(name, resume) for name, _, resume in CALLS] == [("second", True), ("third", True)]  # resumed, then the rest


def test_a_sigterm_as_a_stage_finishes_stops_the_pipeline_before_the_next(tmp_path, echo_command):
    runs = tmp_path / "runs"
    with sigterm_stops_cleanly(), pytest.raises(Preempted, match="stage 'third' stopped by SIGTERM before it started"):
        run_pipeline(write_pipeline(tmp_path / "p.yaml", b=16), output_root=str(runs))
    manifest = json.loads((runs / "demo" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done", "done", "interrupted"]
    assert [name for name, _, _ in CALLS] == ["first", "second"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("  - name: fourth\n    command: nope\n", "unknown command 'nope'"),
        ("  - name: fourth\n    command: echo\n    config: {source: '${later}'}\n", r"\$\{later\} does not name an earlier stage"),
        ("  - name: first\n    command: echo\n", "duplicate stage name 'first'"),
        ("  - name: fourth\n    command: echo\n    config: {valeu: 1}\n", "stage 'fourth': unknown config key 'valeu'.*did you mean 'value'"),
        ("  - name: fourth\n    command: echo\n    config: {value: -1}\n", "stage 'fourth': config key 'value' must be >= 0"),
        ("  - name: fourth\n    command: echo\n    cofnig: {}\n", "unknown key 'cofnig'"),
    ],
)
def test_every_stage_is_validated_before_anything_runs(tmp_path, echo_command, extra, message):
    with pytest.raises(ConfigError, match=message):
        run_pipeline(write_pipeline(tmp_path / "p.yaml", extra=extra), output_root=str(tmp_path / "runs"))
    assert CALLS == []
    assert not (tmp_path / "runs").exists()


def read_manifest(runs: Path) -> dict:
    return json.loads((runs / "demo" / "manifest.json").read_text())


def states(pipeline: Path, runs: Path) -> list[str]:
    return [row.status for row in pipeline_status(pipeline, str(runs))]


def test_status_before_any_run_creates_nothing(tmp_path, echo_command):
    runs = tmp_path / "runs"
    rows = pipeline_status(write_pipeline(tmp_path / "p.yaml"), str(runs))
    assert [(r.name, r.command, r.status, r.wall_time_s) for r in rows] == [
        ("first", "echo", "pending", None),
        ("second", "echo", "pending", None),
        ("third", "echo", "pending", None),
    ]
    assert rows[1].output_dir == runs / "demo" / "second"
    assert CALLS == [] and not runs.exists()


def test_status_after_run_config_change_and_deleted_output(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml")
    run_pipeline(pipeline, output_root=str(runs))
    assert states(pipeline, runs) == ["done", "done", "done"]
    manifest = read_manifest(runs)
    manifest["stages"][0].update(started_at="2024-05-01T10:00:00", finished_at="2024-05-01T10:01:30")
    (runs / "demo" / "manifest.json").write_text(json.dumps(manifest))
    assert [r.wall_time_s for r in pipeline_status(pipeline, str(runs))][0] == 90
    # first's config changed; second references it, so its fingerprint changed too
    write_pipeline(pipeline, a=7)
    assert states(pipeline, runs) == ["changed", "changed", "done"]
    import shutil

    shutil.rmtree(runs / "demo" / "third")
    assert states(pipeline, runs) == ["changed", "changed", "missing"]
    CALLS.clear()
    pipeline_status(pipeline, str(runs))
    assert CALLS == []  # listing runs nothing


def test_format_status_is_one_aligned_line_per_stage(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml")
    run_pipeline(pipeline, output_root=str(runs), only=["first"])
    lines = format_status(pipeline_status(pipeline, str(runs))).splitlines()
    assert lines[0].split() == ["stage", "command", "status", "wall", "output_dir"]
    assert lines[1].split()[:3] == ["first", "echo", "done"] and lines[1].split()[3].endswith("s")
    assert lines[2].split() == ["second", "echo", "pending", "-", str(runs / "demo" / "second")]
    assert len({line.index(line.split()[4]) for line in lines}) == 1  # the output column is aligned


def test_only_reruns_just_that_stage_from_scratch(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml")
    run_pipeline(pipeline, output_root=str(runs))
    before = read_manifest(runs)
    (runs / "demo" / "second" / "stale.txt").write_text("old")
    CALLS.clear()
    manifest = run_pipeline(pipeline, output_root=str(runs), only=["second"])
    assert CALLS == [("second", 2, False)]  # done, but rerun anyway
    assert not (runs / "demo" / "second" / "stale.txt").exists()  # started over
    assert manifest == read_manifest(runs)
    assert [s["status"] for s in manifest["stages"]] == ["done", "done", "done"]
    assert manifest["stages"][0] == before["stages"][0] and manifest["stages"][2] == before["stages"][2]


def test_only_starts_a_failed_stage_over_instead_of_resuming(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml", b=13)
    with pytest.raises(RuntimeError):
        run_pipeline(pipeline, output_root=str(runs))
    CALLS.clear()
    with pytest.raises(RuntimeError):
        run_pipeline(pipeline, output_root=str(runs), only=["second"])
    assert CALLS == [("second", 13, False)]  # a plain rerun would resume it (True)


def test_only_several_stages_and_selected_upstream(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml")
    # nothing has run, but first is selected too, so second may use it
    manifest = run_pipeline(pipeline, output_root=str(runs), only=["second", "first"])
    assert [c[0] for c in CALLS] == ["first", "second"]  # file order
    assert [s["status"] for s in manifest["stages"]] == ["done", "done", "pending"]
    CALLS.clear()
    run_pipeline(pipeline, output_root=str(runs), only="third")
    assert [c[0] for c in CALLS] == ["third"]


def test_only_refuses_when_an_upstream_stage_is_not_done(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml")
    with pytest.raises(ConfigError, match=r"^--only second: upstream stage 'first' is not done \(it has not run\)"):
        run_pipeline(pipeline, output_root=str(runs), only=["second"])
    assert CALLS == [] and not runs.exists()
    run_pipeline(pipeline, output_root=str(runs))
    write_pipeline(pipeline, a=7)
    CALLS.clear()
    with pytest.raises(ConfigError, match=r"upstream stage 'first' is not done \(its config changed since it ran\)"):
        run_pipeline(pipeline, output_root=str(runs), only=["second"])
    assert CALLS == []


def test_stages_left_out_by_only_keep_their_entries(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml")
    run_pipeline(pipeline, output_root=str(runs))
    before = read_manifest(runs)
    write_pipeline(pipeline, a=7)  # first (and so second) changed
    CALLS.clear()
    manifest = run_pipeline(pipeline, output_root=str(runs), only=["third"])
    assert [c[0] for c in CALLS] == ["third"]  # third does not reference first
    assert manifest["stages"][:2] == before["stages"][:2]  # old fingerprints kept...
    assert states(pipeline, runs) == ["changed", "changed", "done"]
    CALLS.clear()
    run_pipeline(pipeline, output_root=str(runs))
    assert [c[:2] for c in CALLS] == [("first", 7), ("second", 2)]  # ...so a plain run still redoes them


def test_from_reruns_that_stage_and_every_later_one(tmp_path, echo_command):
    runs = tmp_path / "runs"
    pipeline = write_pipeline(tmp_path / "p.yaml")
    run_pipeline(pipeline, output_root=str(runs))
    before = read_manifest(runs)
    (runs / "demo" / "third" / "stale.txt").write_text("old")
    CALLS.clear()
    manifest = run_pipeline(pipeline, output_root=str(runs), start_from="second")
    assert CALLS == [("second", 2, False), ("third", 5, False)]
    assert not (runs / "demo" / "third" / "stale.txt").exists()
    assert manifest["stages"][0] == before["stages"][0]
    assert [s["status"] for s in read_manifest(runs)["stages"]] == ["done", "done", "done"]


def test_from_refuses_when_an_earlier_stage_is_not_done(tmp_path, echo_command):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"^--from third: earlier stage 'first' is not done \(it has not run\); use --from first"):
        run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=str(runs), start_from="third")
    assert CALLS == [] and not runs.exists()
    with pytest.raises(RuntimeError):
        run_pipeline(write_pipeline(tmp_path / "p.yaml", b=13), output_root=str(runs))
    CALLS.clear()
    with pytest.raises(ConfigError, match=r"earlier stage 'second' is not done \(it failed\)"):
        run_pipeline(write_pipeline(tmp_path / "p.yaml", b=13), output_root=str(runs), start_from="third")
    assert CALLS == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"only": ["second", "fourth"]}, r"^--only: unknown stage 'fourth' \(stages: first, second, third\)$"),
        ({"start_from": "fourth"}, r"^--from: unknown stage 'fourth' \(stages: first, second, third\)$"),
        ({"only": []}, r"^--only: name at least one stage$"),
        ({"only": ["first"], "start_from": "first"}, r"^--only and --from cannot be combined$"),
    ],
)
def test_bad_stage_selection_is_an_error_before_anything_runs(tmp_path, echo_command, kwargs, message):
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=message):
        run_pipeline(write_pipeline(tmp_path / "p.yaml"), output_root=str(runs), **kwargs)
    assert CALLS == [] and not runs.exists()


@pytest.mark.slow
def test_real_pipeline_survives_kill_and_resumes_from_checkpoint(tmp_path, sigterm_in_step, capsys):
    """make-model -> sft -> eval; SFT is stopped by SIGTERM in step 7, resumed and killed with
    SIGKILL after checkpoint-10; the last rerun resumes it from there and finishes the pipeline."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        """name: small
stages:
  - name: model
    command: make-model
  - name: sft
    command: sft
    config:
      model_name_or_path: ${model}
      dataset_train_split: "train[:256]"
      max_steps: 30
      per_device_train_batch_size: 8
      save_strategy: steps
      save_steps: 5
      logging_steps: 1
  - name: eval
    command: eval
    config: {model_name_or_path: "${sft}", num_examples: 16, max_new_tokens: 40}
"""
    )
    runs = tmp_path / "runs"
    args = ["run", str(pipeline), "--output-root", str(runs)]
    command = [sys.executable, "-m", "posttrain.cli", *args]
    # SIGTERM (a scheduler's preemption notice, a real signal to this process, which runs the
    # CLI's main as `posttrain` does) in SFT's step 7: the stage stops after that step, with a
    # complete checkpoint-7, and is recorded as interrupted
    from posttrain.cli import main

    capsys.readouterr()
    with sigterm_in_step(7):
        code = main(args)
    stderr = capsys.readouterr().err
    assert code == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        f"posttrain run: stage 'sft' stopped by SIGTERM after step 7 of 30; checkpoint-7 in {runs / 'small' / 'sft'} "
        f"is complete; resume with: posttrain run {pipeline} --output-root {runs}")
    manifest = json.loads((runs / "small" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done", "interrupted", "pending"]
    assert (runs / "small" / "sft" / "checkpoint-7" / "posttrain_checkpoint.json").exists()

    # then SIGKILL (no warning) in the resumed run, once it has written checkpoint-10
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = runs / "small" / "sft" / "checkpoint-10" / "posttrain_checkpoint.json"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), "SFT never wrote its first checkpoint"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    manifest = json.loads((runs / "small" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done", "running", "pending"]

    assert main(args) == 0
    stderr = capsys.readouterr().err
    assert "stage 'model': done already, skipping" in stderr
    assert f"resuming from {runs / 'small' / 'sft' / 'checkpoint-10'}" in stderr
    manifest = json.loads((runs / "small" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["done", "done", "done"]
    assert manifest["stages"][1]["metrics"]["global_step"] == 30
    assert 0.0 <= manifest["stages"][2]["metrics"]["accuracy"] <= 1.0
    assert (runs / "small" / "eval" / "eval.json").exists()
