"""Pipeline stages on several processes: a stage's ``launcher`` (:class:`Launcher`).

A training stage may run on N processes (N GPUs of a node, or N CPU processes for a test)::

    - name: sft
      command: sft
      launcher: {num_processes: 8, config_file: accelerate/fsdp.yaml}   # accelerate launch
      config: {...}
    - name: sdpo
      command: sdpo
      launcher: {num_processes: 2}                                       # torchrun (DDP, or CPU gloo)

With a ``config_file`` (an accelerate config, relative to the pipeline file) the stage starts under
``accelerate launch --config_file F --num_processes N``; without one under ``torchrun --standalone
--nproc_per_node N``, which also runs on a CPU (``ACCELERATE_USE_CPU=1``). ``posttrain run`` stays
one process: it writes the stage's config, starts the launcher, waits, and reads back the metrics
rank 0 wrote (:mod:`posttrain.pipeline.launched`), so the manifest, resume and the lock work as
for a stage in-process. A SIGTERM to ``posttrain run`` is passed on to the launcher, whose
processes finish the optimizer step and write one checkpoint together; the stage is then
``interrupted`` and the next run resumes it. Evaluations and data stages stay one process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from posttrain.artifacts import write_json
from posttrain.errors import ConfigError, PosttrainError
from posttrain.preemption import EXIT_PREEMPTED, Preempted, stop_requested, stoppable_loop

LAUNCHER_KEYS = {"num_processes", "config_file"}


@dataclass(frozen=True)
class Launcher:
    num_processes: int
    config_file: Path | None = None

    @classmethod
    def parse(cls, raw, where: str, pipeline_dir: Path) -> Launcher:
        """A stage's ``launcher`` mapping, checked: a clear error naming the stage and key."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: 'launcher' must be a mapping with num_processes (and config_file)")
        if set(raw) - LAUNCHER_KEYS:
            raise ConfigError(f"{where}: unknown launcher key '{sorted(set(raw) - LAUNCHER_KEYS)[0]}' (expected num_processes, config_file)")
        processes = raw.get("num_processes")
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ConfigError(f"{where}: launcher 'num_processes' must be an integer >= 1, got {processes!r}")
        config_file = raw.get("config_file")
        if config_file is not None:
            if not isinstance(config_file, str):
                raise ConfigError(f"{where}: launcher 'config_file' must be a path, got {config_file!r}")
            config_file = pipeline_dir / config_file
            if not config_file.is_file():
                raise ConfigError(f"{where}: launcher config_file {config_file} does not exist")
        return cls(processes, config_file)

    def command(self) -> list[str]:
        """The launcher's command line, up to the module it runs."""
        if self.config_file is not None:
            return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(self.config_file),
                    "--num_processes", str(self.num_processes)]
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(self.num_processes)]

    def describe(self) -> str:
        return f"{self.num_processes} processes" + (f" ({self.config_file.name})" if self.config_file else "")


def run_launched(command_name: str, values: dict, launcher: Launcher, workdir: Path) -> dict:
    """Run one stage under ``launcher``; returns the metrics its rank 0 wrote.

    ``values`` is the stage's config as keys and values; ``workdir`` holds the files passed to and
    from the processes (outside the stage's output directory, which holds only its artifacts)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, metrics_path = workdir / "config.json", workdir / "metrics.json"
    write_json(config_path, values)
    metrics_path.unlink(missing_ok=True)
    process = subprocess.Popen([*launcher.command(), "-m", "posttrain.pipeline.launched", command_name, str(config_path), str(metrics_path)])
    forwarded = False
    with stoppable_loop():  # while waiting, SIGTERM only sets the flag; it is passed on here
        while process.poll() is None:
            if stop_requested() and not forwarded:
                process.send_signal(signal.SIGTERM)  # the launcher passes it to every process
                forwarded = True
            time.sleep(0.1)
    if process.returncode == EXIT_PREEMPTED or forwarded:
        raise Preempted(f"stopped by SIGTERM on {launcher.describe()}")
    if process.returncode != 0:
        raise PosttrainError(f"its {launcher.describe()} exited with status {process.returncode} (their output is above)")
    if not metrics_path.is_file():
        raise PosttrainError(f"its {launcher.describe()} finished without writing {metrics_path}")
    return json.loads(metrics_path.read_text())
