"""The example accelerate configs in recipes/accelerate/: each is a valid accelerate config file
and makes ``accelerate launch`` pick the intended launcher (docs/distributed.md)."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).parents[1] / "recipes" / "accelerate"

EXPECTED = {
    "ddp.yaml": DistributedType.MULTI_GPU,
    "fsdp.yaml": DistributedType.FSDP,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
}


def test_every_shipped_config_is_covered():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerates_loader(name):
    config = load_config_from_file(str(CONFIGS / name))  # refuses unknown keys
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == EXPECTED[name]
    assert config.num_processes == 8 and config.num_machines == 1 and not config.use_cpu
    assert config.mixed_precision == "bf16"
    if name == "fsdp.yaml":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-6])
        # left to the posttrain config ("auto"), so the two cannot disagree
        assert "gradient_accumulation_steps" not in config.deepspeed_config
        assert "gradient_clipping" not in config.deepspeed_config


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_launch_reads_the_config_and_runs_the_posttrain_module(name):
    """The documented command line, as accelerate launch parses and completes it (nothing started)."""
    argv = ["--config_file", str(CONFIGS / name), "-m", "posttrain.cli", "sft", "--config", "my_sft.yaml"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    launcher = {"multi_gpu": args.multi_gpu, "fsdp": args.use_fsdp, "deepspeed": args.use_deepspeed}
    expected = {"ddp.yaml": "multi_gpu", "fsdp.yaml": "fsdp"}.get(name, "deepspeed")
    assert [k for k, on in launcher.items() if on] == [expected]
    assert args.num_processes == 8 and not args.cpu
    assert args.module and args.training_script == "posttrain.cli"
    assert args.training_script_args == ["sft", "--config", "my_sft.yaml"]
    if expected == "deepspeed":
        assert args.zero_stage == int(name[-6])
