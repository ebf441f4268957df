"""dpo_loss equals TRL's DPOTrainer loss for the same inputs (checked against TRL itself).

TRL's ``_compute_loss`` is driven with a stand-in model whose per-token log-probs are set
exactly, and precomputed reference log-probs; so both sides see the same log-ratios."""

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from posttrain.losses import dpo_loss
from posttrain.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def trl_trainer(tiny_model_dir, tmp_path_factory):
    pairs = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "yes"}],
              "rejected": [{"role": "assistant", "content": "no"}]} for i in range(4)]
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), use_cpu=True, report_to="none", per_device_train_batch_size=2)
    return DPOTrainer(model=load_model(tiny_model_dir), args=args, train_dataset=Dataset.from_list(pairs),
                      processing_class=load_tokenizer(tiny_model_dir))


class ExactLogProbs(torch.nn.Module):
    """Returns the given per-token log-probs in the shape TRL's fused head produces."""

    def __init__(self, log_probs):
        super().__init__()
        self.log_probs = log_probs

    def forward(self, **kwargs):
        zeros = torch.zeros_like(self.log_probs)
        return SimpleNamespace(log_probs=self.log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def make_inputs(seed=0, batch=3, length=7):
    generator = torch.Generator().manual_seed(seed)
    completion_mask = torch.zeros(2 * batch, length, dtype=torch.long)
    for row, start in enumerate([2, 3, 4, 2, 5, 3][: 2 * batch]):
        completion_mask[row, start:] = 1
    log_probs = -torch.rand(2 * batch, length - 1, generator=generator) * 3 * completion_mask[:, 1:]
    inputs = {
        "input_ids": torch.randint(5, 50, (2 * batch, length), generator=generator),
        "attention_mask": torch.ones(2 * batch, length, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": -torch.rand(batch, generator=generator) * 10,
        "ref_rejected_logps": -torch.rand(batch, generator=generator) * 10,
    }
    return log_probs, inputs


@pytest.mark.parametrize(
    "loss_type, label_smoothing, beta",
    [("sigmoid", 0.0, 0.1), ("sigmoid", 0.0, 0.7), ("ipo", 0.0, 0.1), ("ipo", 0.0, 0.5), ("hinge", 0.0, 0.1),
     ("hinge", 0.0, 2.0), ("robust", 0.0, 0.1), ("robust", 0.1, 0.1), ("robust", 0.3, 0.5)],
)
def test_dpo_loss_matches_trl(trl_trainer, loss_type, label_smoothing, beta):
    log_probs, inputs = make_inputs(seed=hash((loss_type, beta)) % 1000)
    trl_trainer.loss_types, trl_trainer.loss_weights = [loss_type], [1.0]
    trl_trainer.beta, trl_trainer.label_smoothing = beta, label_smoothing
    trl_trainer.precompute_ref_logps = True
    trl_trainer.model.train()
    expected = trl_trainer._compute_loss(ExactLogProbs(log_probs), dict(inputs), return_outputs=False)

    logps = (log_probs * inputs["completion_mask"][:, 1:]).sum(dim=1)
    chosen_logps, rejected_logps = logps.chunk(2)
    lengths = inputs["completion_mask"].sum(dim=1)
    ours = dpo_loss(
        chosen_logps - inputs["ref_chosen_logps"], rejected_logps - inputs["ref_rejected_logps"], beta,
        loss_type, label_smoothing, *lengths.chunk(2),
    ).mean()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
