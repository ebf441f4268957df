"""Run by test_sdpo.py under ``torchrun --nproc_per_node 2`` (CPU, gloo): SDPO with groups of 8
samples spread over two processes of 4.

Usage: sdpo_distributed_job.py MODEL_DIR OUT_DIR

Each rank writes ``generation-rank<r>.json`` (one hand-made generation batch: its completions,
teacher prompts and distillation mask) and, after two training steps, ``done-rank<r>.json``.
"""

import json
import os
import sys
from pathlib import Path

import torch
from trl import GRPOConfig

from posttrain.commands.sdpo import prompt_dataset
from posttrain.models import load_model, load_tokenizer
from posttrain.tasks.sources import load_rows
from posttrain.trainers.callbacks import MetricsFileCallback
from posttrain.trainers.sdpo import SDPOSettings, SDPOTrainer

GROUP = 8
PER_DEVICE = 4


def success_on_rank_one(prompts, completions, **kwargs):
    """Only rank 1's first sample (sample 4 of the group) succeeds; nobody gets feedback."""
    rank = int(os.environ["RANK"])
    return [1.0 if rank == 1 and i % PER_DEVICE == 0 else 0.0 for i in range(len(completions))]


def main(model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    tokenizer = load_tokenizer(model_dir)
    dataset = prompt_dataset(load_rows("task:arithmetic", "train[:16]"))
    args = GRPOConfig(output_dir=out, per_device_train_batch_size=PER_DEVICE, num_generations=GROUP,
                      max_completion_length=12, max_steps=2, learning_rate=1e-3, logging_steps=1,
                      save_strategy="no", use_cpu=True, report_to="none", seed=0)
    trainer = SDPOTrainer(model=load_model(model_dir), reward_funcs=[success_on_rank_one], args=args,
                          train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[MetricsFileCallback(out)], sdpo=SDPOSettings(teacher="ema"))
    rank = trainer.accelerator.process_index

    # one generation batch by hand, laid out as the sampler does: the same prompt, 4 samples per rank
    trainer.model.train()
    batch = trainer._generate_and_score_completions([dataset[0]] * PER_DEVICE)
    record = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "completions": [tokenizer.decode(ids[m.bool()], skip_special_tokens=True)
                        for ids, m in zip(batch["completion_ids"], batch["completion_mask"])],
        "teacher_prompts": [tokenizer.decode(ids[m.bool()])
                            for ids, m in zip(batch["teacher_prompt_ids"], batch["teacher_prompt_mask"])],
        "mask": batch["self_distillation_mask"].tolist(),
    }
    (out_dir / f"generation-rank{rank}.json").write_text(json.dumps(record))

    result = trainer.train()
    done = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
    (out_dir / f"done-rank{rank}.json").write_text(json.dumps(done))


if __name__ == "__main__":
    main(*sys.argv[1:3])
