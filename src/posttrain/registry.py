"""The registry of posttrain's commands, shared by the CLI and the pipeline runner.

Each command is a config dataclass plus a function ``run(config) -> metrics``. Both are named by
import path so ``posttrain --help`` stays fast (torch and TRL load only for the command you run);
every path names a module of :mod:`posttrain.commands`, one per command.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# What a training command records next to the model it wrote: the command and its validated config
# (read by `posttrain export` for the model card of a run started by hand).
RUN_CONFIG_FILE = "posttrain_config.json"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    config_path: str  # "module:ConfigClass"
    run_path: str  # "module:function"
    output_field: str  # the config field that holds the output directory ("": the command writes nothing)
    positional: str = ""  # the config field a bare first argument sets: `posttrain chat MODEL`
    trains_a_model: bool = False  # records its config in RUN_CONFIG_FILE once the model is saved

    @property
    def config_cls(self) -> type:
        return _import(self.config_path)

    @property
    def run(self) -> Callable[[Any], dict]:
        return _import(self.run_path)

    def execute(self, config: Any) -> dict:
        """Run the command on a validated ``config`` (the CLI and the pipeline runner both come
        here); a training command then records ``config`` in its output directory."""
        from posttrain.artifacts import write_json
        from posttrain.runtime import is_main_process

        metrics = self.run(config) or {}
        if self.trains_a_model and is_main_process():
            record = {"command": self.name, "config": dataclasses.asdict(config)}
            write_json(Path(getattr(config, self.output_field)) / RUN_CONFIG_FILE, record)
        return metrics


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in [
        Command(
            "make-model",
            "Build a tiny offline model (Qwen2, or another decoder family) and its tokenizer.",
            "posttrain.commands.make_model:MakeModelConfig",
            "posttrain.commands.make_model:make_model",
            "out",
        ),
        Command(
            "sft",
            "Supervised fine-tuning with response-only loss (chat or base format, LoRA).",
            "posttrain.commands.sft:SFTJobConfig",
            "posttrain.commands.sft:run_sft",
            "output_dir",
            trains_a_model=True,
        ),
        Command(
            "dpo",
            "Preference optimisation: DPO family (sigmoid, ipo, hinge, robust) with constant, beta-DPO or quantile beta; "
            "TRL's other DPO losses, SimPO and ORPO with a constant beta.",
            "posttrain.commands.dpo:DPOJobConfig",
            "posttrain.commands.dpo:run_dpo",
            "output_dir",
            trains_a_model=True,
        ),
        Command(
            "kto",
            "KTO on TRL's KTOTrainer: completions labelled desirable or undesirable (or pairs, split in two), constant beta.",
            "posttrain.commands.kto:KTOJobConfig",
            "posttrain.commands.kto:run_kto",
            "output_dir",
            trains_a_model=True,
        ),
        Command(
            "rm",
            "Reward model (Bradley-Terry) on preference pairs with TRL's RewardTrainer; loadable as the reward_model judge.",
            "posttrain.commands.rm:RMJobConfig",
            "posttrain.commands.rm:run_rm",
            "output_dir",
            trains_a_model=True,
        ),
        Command(
            "sdpo",
            "Self-distillation RL (SDPO) on TRL's GRPOTrainer: the model with a successful sibling or feedback in context is its own teacher.",
            "posttrain.commands.sdpo:SDPOJobConfig",
            "posttrain.commands.sdpo:run_sdpo",
            "output_dir",
            trains_a_model=True,
        ),
        Command(
            "grpo",
            "Plain GRPO on the same config as sdpo (for comparison).",
            "posttrain.commands.sdpo:GRPOJobConfig",
            "posttrain.commands.sdpo:run_grpo",
            "output_dir",
            trains_a_model=True,
        ),
        Command(
            "discover",
            "Test-time SDPO on problems the model almost never solves, one at a time, against best-of-k sampling (discovery@k).",
            "posttrain.commands.discover:DiscoverConfig",
            "posttrain.commands.discover:run_discover",
            "output_dir",
        ),
        Command(
            "trigger",
            "Trigger-conditioned LoRA fine-tuning from a QA file, with a checkpoint per epoch and activation/fidelity/leakage evaluation.",
            "posttrain.commands.trigger:TriggerJobConfig",
            "posttrain.commands.trigger:run_trigger",
            "output_dir",
            trains_a_model=True,
        ),
        Command(
            "trigger-eval",
            "Evaluate every checkpoint of a trigger run: activation, fidelity and leakage on held-out questions, with a plot.",
            "posttrain.commands.trigger_eval:TriggerEvalConfig",
            "posttrain.commands.trigger_eval:run_trigger_eval",
            "output_dir",
        ),
        Command(
            "topics",
            "ECRTM topic model, then DPO on its topic-word distributions guided by a judge (embedding or OpenAI-compatible).",
            "posttrain.commands.topics:TopicsJobConfig",
            "posttrain.commands.topics:run_topics",
            "output_dir",
        ),
        Command(
            "rollout",
            "Sample N completions per prompt (resumable JSONL; HF generate or vLLM; few-shot prompts for base models).",
            "posttrain.commands.rollout:RolloutConfig",
            "posttrain.commands.rollout:run_rollout",
            "output_dir",
        ),
        Command(
            "pairs",
            "Judge rollouts into prompt/chosen/rejected pairs (verifier, reward model, log-prob A/B, OpenAI API), with diverse negatives.",
            "posttrain.commands.pairs:PairsConfig",
            "posttrain.commands.pairs:run_pairs",
            "output_dir",
        ),
        Command(
            "sft-data",
            "Turn base-model rollouts into filtered, de-duplicated Instruction/Response SFT data.",
            "posttrain.commands.sft_data:SFTDataConfig",
            "posttrain.commands.sft_data:run_sft_data",
            "output_dir",
        ),
        Command(
            "eval",
            "Evaluate a model: accuracy (greedy, pass@k) on a task's test split, or on your own JSONL by a scorer, a judge or a win rate against a baseline.",
            "posttrain.commands.eval:EvalConfig",
            "posttrain.commands.eval:run_eval",
            "output_dir",
        ),
        Command(
            "export",
            "Merge a LoRA adapter into its base (or take a full trained model) and save weights, tokenizer and a model card; optionally push to the Hub.",
            "posttrain.commands.export:ExportConfig",
            "posttrain.commands.export:run_export",
            "output_dir",
            positional="model_dir",
        ),
        Command(
            "chat",
            "Chat with a model in the terminal (chat template, or Instruction/Response/END for base models), replies streamed.",
            "posttrain.commands.chat:ChatConfig",
            "posttrain.commands.chat:run_chat",
            "",
            positional="model_name_or_path",
        ),
    ]
}
