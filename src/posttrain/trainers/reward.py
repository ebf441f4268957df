"""Reward models on TRL's RewardTrainer: :class:`RewardModelTrainer` (what ``posttrain rm`` trains with).

TRL's RewardTrainer holds the method: the Bradley–Terry loss ``−log σ(r(chosen) − r(rejected))``
(plus ``center_rewards_coefficient · mean(r²)`` when set), the collator that stacks chosen over
rejected, the pad token on the model config, and the metrics (``accuracy``, ``margin``,
``min/mean/max_reward``; ``eval_``-prefixed on held-out pairs). posttrain adds its complete
checkpoints, the non-finite-loss guard, and a final save that a judge can load by path.
"""

from __future__ import annotations

from accelerate.utils import is_peft_model
from trl import RewardTrainer

from posttrain.trainers.checkpoints import CompleteCheckpoints
from posttrain.trainers.nonfinite import NonFiniteLossGuard


class RewardModelTrainer(NonFiniteLossGuard, CompleteCheckpoints, RewardTrainer):
    """TRL's RewardTrainer with posttrain's checkpoints and loss guard."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The final save of a LoRA run is the adapter merged into its base: a plain
        sequence-classification model, which ``from_pretrained`` (the ``reward_model`` judge, the
        eval scorer) loads by path; a causal-LM adapter loader would not know its score head.
        Checkpoints keep the adapter, which is what a resume needs. The merge happens in place:
        the trainer's model is the merged one afterwards."""
        model = self.accelerator.unwrap_model(self.model)
        if _internal_call or not is_peft_model(model):
            super().save_model(output_dir, _internal_call)
        elif self.args.should_save:
            model.merge_and_unload().save_pretrained(output_dir or self.args.output_dir)
