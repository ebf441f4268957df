"""The ``posttrain`` command line. Thin on purpose: parsing here, work in the modules.

Training commands take ``--config FILE.yaml`` plus ``--key value`` overrides, like TRL's CLI.
User errors print one line and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from posttrain import __version__
from posttrain.errors import PosttrainError
from posttrain.preemption import EXIT_PREEMPTED, Preempted, sigterm_stops_cleanly
from posttrain.registry import COMMANDS, Command

EXIT_USAGE = 2


def _fields_help(command: Command) -> str:
    from posttrain.config import describe_fields

    lines = ["config keys (set in --config FILE.yaml or as --key value):"]
    for name, type_name, default, text in describe_fields(command.config_cls):
        lines.append(f"  --{name} ({type_name}, default {default!r})\n      {text}")
    return "\n".join(lines)


class _CommandHelp(argparse.Action):
    """``--help`` on a command also lists its config keys (importing the command lazily)."""

    def __init__(self, option_strings, command: Command, dest=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)
        self.command = command

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        print()
        print(_fields_help(self.command))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posttrain",
        description="Post-train language models: SFT, DPO family, preference data, SDPO, and more.",
    )
    parser.add_argument("--version", action="version", version=f"posttrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        # a command with a positional key (`posttrain chat MODEL`) shows it in its usage line
        usage = f"%(prog)s [{command.positional.upper()}] [--config CONFIG] [--key value ...]" if command.positional else None
        p = sub.add_parser(command.name, help=command.help, description=command.help, add_help=False, usage=usage)
        p.add_argument("-h", "--help", action=_CommandHelp, command=command, help="show this help and the config keys")
        p.add_argument("--config", help="YAML file with config keys")
    run = sub.add_parser("run", help="Run a pipeline of stages (resumable).", description="Run a pipeline of stages; a rerun skips finished stages and resumes an interrupted one.")
    run.add_argument("pipeline", help="pipeline YAML file (e.g. recipes/quickstart.yaml)")
    run.add_argument("--output-root", default=None, help="directory for runs (default: the file's output_root, or runs/)")
    run.add_argument("--list", dest="list_stages", action="store_true", help="print every stage's status, output directory and wall time; run nothing")
    run.add_argument("--only", action="append", metavar="STAGE", help="run just this stage (repeat, or comma-separate), starting over even if done; the stages it references must be done")
    run.add_argument("--from", dest="start_from", metavar="STAGE", help="rerun STAGE and every later stage, starting over; earlier stages must be done")
    return parser


def _resume_hint(argv: list[str], resume_key: bool) -> str:
    """How to continue a run SIGTERM stopped: the same command line (with ``--resume true`` for
    the training commands; rollouts, pairs and pipelines pick up where they stopped by themselves)."""
    args = list(argv)
    if "--resume" in args[:-1]:
        at = args.index("--resume")
        del args[at : at + 2]
    command = "posttrain " + " ".join(shlex.quote(a) for a in args) + (" --resume true" if resume_key else "")
    return f"resume with: {command}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    with sigterm_stops_cleanly():
        try:
            return _run_command(args, rest, argv)
        finally:
            if "accelerate" in sys.modules:  # something distributed may have started (not for --help, make-model)
                from posttrain.runtime import leave_process_group

                leave_process_group()


def _run_command(args: argparse.Namespace, rest: list[str], argv: list[str]) -> int:
    output_dir = None  # where the command writes, for messages about failed writes
    config = None
    try:
        if args.command == "run":
            if rest:
                raise PosttrainError(f"unexpected argument '{rest[0]}' for run")
            from posttrain.commands.run import run

            run(args.pipeline, args.output_root, list_stages=args.list_stages, only=args.only, start_from=args.start_from)
            return 0
        from posttrain.artifacts import check_writable
        from posttrain.config import load_config, parse_overrides
        from posttrain.runtime import is_main_process

        command = COMMANDS[args.command]
        if command.positional and rest and not rest[0].startswith("-"):
            rest = [f"--{command.positional}", *rest]  # `posttrain chat MODEL` is `--model_name_or_path MODEL`
        config = load_config(command.config_cls, path=args.config, overrides=parse_overrides(rest))
        if command.output_field:
            output_dir = getattr(config, command.output_field)
            check_writable(output_dir)
        metrics = command.execute(config)
        if metrics and is_main_process():  # under a launcher, one copy of the result; chat has none
            print(json.dumps(metrics, indent=2, default=str))
        return 0
    except Preempted as err:
        from posttrain.runtime import is_main_process

        if is_main_process():
            # a pipeline resumes its interrupted stage by itself; the --only/--from it was given
            # would start that stage over, so the hint is the plain `posttrain run PIPELINE`
            hint_argv = argv
            if args.command == "run":
                hint_argv = ["run", args.pipeline, *(["--output-root", args.output_root] if args.output_root else [])]
            resume_key = args.command != "run" and hasattr(config, "resume")
            print(f"posttrain {args.command}: {err}; {_resume_hint(hint_argv, resume_key)}", file=sys.stderr)
        return EXIT_PREEMPTED
    except PosttrainError as err:
        print(f"posttrain {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        from posttrain.artifacts import describe_write_failure

        message = describe_write_failure(err, output_dir)
        if message is None:
            raise  # a bug: keep the traceback
        print(f"posttrain {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"posttrain {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
