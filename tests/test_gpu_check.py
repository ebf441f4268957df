"""benchmarks/gpu_check.sh is ready for a GPU machine: it parses, its dry run lists every check,
and every posttrain command line in it is a valid config (a typo in a key would only show on the GPU)."""

import shlex
import subprocess
from pathlib import Path

from posttrain.config import load_config, parse_overrides
from posttrain.registry import COMMANDS

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
CHECKS = ["environment", "gpu_tests", "model", "sft_fsdp", "eval_fsdp", "sft_deepspeed_zero2", "eval_deepspeed_zero2",
          "rollouts_hf", "rollouts_vllm", "sdpo_ema_fsdp", "sdpo_trust_region_fsdp", "sdpo_ema_deepspeed_zero3",
          "sdpo_trust_region_deepspeed_zero3", "sdpo_lora_ema_fsdp", "sdpo_lora_ema_deepspeed_zero3", "sdpo_vllm_colocate", "sdpo_vllm_server",
          "sdpo_grpo_bf16", "sdpo_memory"]


def dry_run(out: Path) -> list[str]:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_dry_run_prints_every_check_and_runs_nothing(tmp_path):
    lines = dry_run(tmp_path / "out")
    assert [line[3:] for line in lines if line.startswith("== ") and not line.startswith("== summary")] == CHECKS
    summary = lines[lines.index(next(line for line in lines if line.startswith("== summary"))) + 2:]
    assert [row.split()[:2] for row in summary] == [[name, "dry-run"] for name in CHECKS]
    assert list((tmp_path / "out").iterdir()) == []  # nothing ran


def test_every_posttrain_command_line_in_it_is_a_valid_config(tmp_path):
    commands = [shlex.split(line[2:]) for line in dry_run(tmp_path / "out") if line.startswith("+ ")]
    posttrain = [args[args.index("posttrain.cli") + 1:] for args in commands if "posttrain.cli" in args]
    assert [args[0] for args in posttrain] == ["make-model", "sft", "eval", "sft", "eval", "rollout", "rollout", "sdpo", "sdpo", "sdpo", "sdpo", "sdpo", "sdpo", "sdpo", "sdpo"]
    for name, *overrides in posttrain:
        load_config(COMMANDS[name].config_cls, overrides=parse_overrides(overrides))  # raises on a bad key or value
    for args in commands:
        if "--config_file" in args:
            assert (SCRIPT.parents[1] / args[args.index("--config_file") + 1]).is_file()
