"""How much plain-text pretraining the stand-in base model needs, and whether it reads few-shot prompts.

    python benchmarks/base_model_pretraining.py [--steps 300 400] [--problems 100]

For each budget, the tiny model (``posttrain make-model``) is pretrained by the ``pretrain`` stage
of ``recipes/base_model.yaml`` (``documents`` split: pages of 0-2 examples before a problem, plain
prompt/completion, batch 64, lr 3e-3 cosine, 10% warm-up) for that many steps instead of its 500,
then solves held-out problems greedily:

* in three framings its pages use (:data:`KNOWN_FRAMINGS`), one problem alone, as in its text;
* few-shot in the post-training format: three Instruction/Response/END examples before the
  problem, either arithmetic ones (from the training split) or the rollouts' varied pool (what
  ``posttrain eval --few_shot 3`` and ``posttrain rollout`` use).

This separates "has it learned the sums" from "can it follow a few-shot prompt in a format it never
saw", the two things the base-model route needs from a base model.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from posttrain.commands.make_model import MakeModelConfig, make_model
from posttrain.commands.sft import SFTJobConfig, run_sft
from posttrain.config import load_config, read_yaml
from posttrain.data.base_format import END, base_format, base_prompt
from posttrain.generation.few_shot import few_shot_prompt
from posttrain.generation.sampling import cut_at_stop, generate
from posttrain.models import free_model, load_model, load_tokenizer
from posttrain.tasks.arithmetic import ArithmeticTask, extract_answer

RECIPE = Path(__file__).parents[1] / "recipes" / "base_model.yaml"
STOPS = [END, "\nInstruction:", "\n\n"]  # an answer ends there, whichever format the model writes
# three framings the pretraining pages use (no labels, two conventional pairs)
KNOWN_FRAMINGS = ("{prompt}", "Q: {prompt}\nA:", "Problem: {prompt}\nSolution:")


def pretrain(model_dir: str, steps: int, out: str) -> str:
    """The recipe's ``pretrain`` stage with another step budget and no checkpoints."""
    stage = next(s for s in read_yaml(RECIPE)["stages"] if s["name"] == "pretrain")
    values = {**stage["config"], "model_name_or_path": model_dir, "max_steps": steps, "save_strategy": "no", "output_dir": out}
    run_sft(load_config(SFTJobConfig, values=values))
    return out


def accuracy(model, tokenizer, prompts: list[str], rows: list[dict]) -> float:
    texts = generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=50, stop_strings=STOPS, desc="greedy")
    return sum(extract_answer(cut_at_stop(t[0], STOPS)) == row["answer"] for t, row in zip(texts, rows)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 400])
    parser.add_argument("--problems", type=int, default=100)
    args = parser.parse_args()
    task = ArithmeticTask()
    rows = task.make_dataset("test", n=args.problems)
    shots = task.make_dataset("train", n=3)
    arithmetic_shots = "\n\n".join(base_format(r["prompt"], r["completion"]) for r in shots)
    rng = random.Random(0)
    prompts = {f"framing {framing!r}": [framing.format(**row) for row in rows] for framing in KNOWN_FRAMINGS}
    prompts["3-shot, arithmetic examples"] = [arithmetic_shots + "\n\n" + base_prompt(row["prompt"]) for row in rows]
    prompts["3-shot, varied pool"] = [few_shot_prompt(row["prompt"], rng, 3) for row in rows]

    results = {}
    with tempfile.TemporaryDirectory() as work:
        make_model(load_config(MakeModelConfig, values={"out": f"{work}/model", "seed": 0}))
        for steps in args.steps:
            path = pretrain(f"{work}/model", steps, f"{work}/base-{steps}")
            tokenizer, model = load_tokenizer(path, base_model_mode=True), load_model(path)
            # the base model has no chat template: every prompt is plain text
            results[steps] = {name: accuracy(model, tokenizer, texts, rows) for name, texts in prompts.items()}
            free_model(model)

    print(f"\ngreedy accuracy on {args.problems} held-out problems")
    print(f"{'prompt':40s}" + "".join(f"{f'{s} steps':>12s}" for s in args.steps))
    for name in prompts:
        print(f"{name:40s}" + "".join(f"{results[s][name]:12.1%}" for s in args.steps))


if __name__ == "__main__":
    main()
