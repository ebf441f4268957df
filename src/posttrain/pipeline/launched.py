"""The program each process of a launched pipeline stage runs (:mod:`posttrain.pipeline.launcher`):

    python -m posttrain.pipeline.launched COMMAND CONFIG.json METRICS.json

It loads the stage's config, runs the command as ``posttrain COMMAND`` would, and rank 0 writes the
command's metrics for ``posttrain run``. Exit status 0, 143 after a SIGTERM (a checkpoint was
saved), 2 after an error (printed, one line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from posttrain.artifacts import write_json
from posttrain.config import load_config
from posttrain.errors import PosttrainError
from posttrain.preemption import EXIT_PREEMPTED, Preempted, sigterm_stops_cleanly
from posttrain.registry import COMMANDS
from posttrain.runtime import is_main_process, leave_process_group


def main(argv: list[str]) -> int:
    command_name, config_path, metrics_path = argv
    command = COMMANDS[command_name]
    with sigterm_stops_cleanly():
        try:
            config = load_config(command.config_cls, values=json.loads(Path(config_path).read_text()))
            metrics = command.execute(config)
        except Preempted as err:
            print(f"posttrain {command_name}: {err}", file=sys.stderr)
            return EXIT_PREEMPTED
        except PosttrainError as err:
            print(f"posttrain {command_name}: error: {err}", file=sys.stderr)
            return 2
        finally:
            leave_process_group()
    if is_main_process():
        write_json(Path(metrics_path), {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str, bool))})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
