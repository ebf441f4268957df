"""The preference losses posttrain hands to TRL reach TRL as configured and give TRL's numbers.

For TRL's other DPO loss types, weighted lists of them, ORPO and KTO, the trainer ``posttrain``
builds from its config computes the same loss and metrics as a TRL trainer configured by hand, on
the same tiny model, batch and (moved) policy. SimPO is checked against its paper's formula,
computed from the model's own log-probs."""

import json
import re

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from posttrain.commands.dpo import TRL_DPO_LOSS_TYPES, DPOJobConfig, build_dpo_trainer
from posttrain.commands.kto import KTOJobConfig, build_kto_trainer
from posttrain.config import load_config
from posttrain.losses import DPO_LOSSES
from posttrain.models import load_model, load_tokenizer
from posttrain.trainers.dpo import GuardedDPOTrainer
from posttrain.trainers.kto import GuardedKTOTrainer

PAIRS = [{"prompt": f"What is {i} + {i}?", "chosen": str(2 * i), "rejected": f"{2 * i + 1} or so"} for i in range(4)]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS))
    return str(path)


def job(config_cls, model_dir, data, out, **values):
    defaults = dict(model_name_or_path=model_dir, dataset_name=data, output_dir=str(out), per_device_train_batch_size=4, seed=0)
    return load_config(config_cls, values={**defaults, **values})


def trl_args(config_cls, out, **values):
    """A TRL config by hand, in float32 as posttrain's (TRL's own default is bf16)."""
    return config_cls(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", per_device_train_batch_size=4, **values)


def move_policies(*trainers) -> None:
    """Add the same noise to every trainer's policy, so it differs from the reference (loaded from
    the same directory by each trainer) and the losses are not all at their value for M = 0."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for params in zip(*(trainer.model.parameters() for trainer in trainers), strict=True):
            noise = torch.randn(params[0].shape, generator=generator) * 0.05
            for param in params:
                param.add_(noise)
    for trainer in trainers:
        trainer.model.train()


def first_batch(trainer) -> dict:
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def assert_same_loss_and_metrics(ours, theirs, batch) -> None:
    torch.testing.assert_close(ours.compute_loss(ours.model, batch), theirs.compute_loss(theirs.model, batch))
    for key, values in theirs._metrics["train"].items():
        assert ours._metrics["train"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key


def test_every_loss_type_of_trls_dpo_trainer_is_accepted():
    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    assert set(re.findall(r"`'(\w+)'`", help_text)) == {*DPO_LOSSES, *TRL_DPO_LOSS_TYPES}


@pytest.mark.parametrize(
    "values, loss_type, loss_weights",
    [
        ({"loss_type": "exo_pair", "label_smoothing": 1e-3}, ["exo_pair"], [1.0]),
        ({"loss_type": "discopop"}, ["discopop"], [1.0]),
        ({"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]}, ["sigmoid", "bco_pair", "sft"],
         [0.8, 0.2, 1.0]),  # MPO
        ({"loss_type": "apo_zero", "rpo_alpha": 0.5}, ["apo_zero", "sft"], [1.0, 0.5]),  # RPO as TRL spells it
    ],
    ids=["exo_pair", "discopop", "weighted-list", "rpo_alpha"],
)
def test_trl_computes_its_own_dpo_losses(tiny_model_dir, pairs_file, tmp_path, values, loss_type, loss_weights):
    ours = build_dpo_trainer(job(DPOJobConfig, tiny_model_dir, pairs_file, tmp_path / "ours", beta=0.5, **values))
    assert type(ours) is GuardedDPOTrainer  # TRL's _compute_loss, not posttrain's
    assert (ours.args.loss_type, ours.args.loss_weights, ours.beta) == (loss_type, loss_weights, 0.5)
    args = trl_args(DPOConfig, tmp_path / "trl", beta=0.5, loss_type=loss_type, loss_weights=loss_weights,
                    label_smoothing=values.get("label_smoothing", 0.0))
    theirs = DPOTrainer(model=load_model(tiny_model_dir), args=args, train_dataset=Dataset.from_list(PAIRS),
                        processing_class=load_tokenizer(tiny_model_dir))
    move_policies(ours, theirs)
    assert_same_loss_and_metrics(ours, theirs, first_batch(ours))


@pytest.mark.parametrize("rpo_alpha", [0.0, 0.5], ids=["simpo", "cpo-simpo"])
def test_simpo_is_the_papers_loss_without_a_reference_model(tiny_model_dir, pairs_file, tmp_path, rpo_alpha):
    """SimPO (Meng et al. 2024, eq. 6): −log σ(β·(mean log π(y_w) − mean log π(y_l)) − γ), plus
    rpo_alpha × the token-mean NLL of the chosen responses (CPO-SimPO)."""
    beta, gamma = 2.0, 0.6
    trainer = build_dpo_trainer(job(DPOJobConfig, tiny_model_dir, pairs_file, tmp_path, loss_type="simpo", beta=beta,
                                    simpo_gamma=gamma, rpo_alpha=rpo_alpha))
    assert not hasattr(trainer, "ref_model")  # TRL's CPOTrainer: no reference model anywhere
    assert (trainer.args.loss_type, trainer.args.simpo_gamma, trainer.args.cpo_alpha) == ("simpo", gamma, rpo_alpha)
    trainer.model.train()
    batch = first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, batch)

    def response_logps(side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of the responses, and their mask."""
        logits = trainer.model(batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]).logits[:, :-1]
        labels = batch[f"{side}_labels"][:, 1:]
        mask = labels != -100
        logps = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return logps * mask, mask

    (chosen, chosen_mask), (rejected, rejected_mask) = response_logps("chosen"), response_logps("rejected")
    margin = chosen.sum(-1) / chosen_mask.sum(-1) - rejected.sum(-1) / rejected_mask.sum(-1)
    expected = -F.logsigmoid(beta * margin - gamma).mean() - rpo_alpha * chosen.sum() / chosen_mask.sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_orpo_equals_trls_orpo_trainer(tiny_model_dir, pairs_file, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    ours = build_dpo_trainer(job(DPOJobConfig, tiny_model_dir, pairs_file, tmp_path / "ours", loss_type="orpo", beta=0.25))
    assert isinstance(ours, ORPOTrainer) and not hasattr(ours, "ref_model") and ours.args.beta == 0.25
    tokenizer = load_tokenizer(tiny_model_dir)
    pairs = [{"prompt": [{"role": "user", "content": p["prompt"]}], "chosen": [{"role": "assistant", "content": p["chosen"]}],
              "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in PAIRS]
    theirs = ORPOTrainer(model=load_model(tiny_model_dir), args=trl_args(ORPOConfig, tmp_path / "trl", beta=0.25),
                         train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)
    for trainer in (ours, theirs):
        trainer.model.train()
    batch = first_batch(ours)
    torch.testing.assert_close(ours.compute_loss(ours.model, batch), theirs.compute_loss(theirs.model, batch))
    ours_metrics, theirs_metrics = ours._stored_metrics["train"], theirs._stored_metrics["train"]
    assert ours_metrics.keys() == theirs_metrics.keys() and "log_odds_ratio" in ours_metrics
    for key in theirs_metrics:
        assert ours_metrics[key] == pytest.approx(theirs_metrics[key], rel=1e-5), key


def test_kto_on_pairs_equals_trls_kto_trainer(tiny_model_dir, pairs_file, tmp_path):
    values = dict(beta=0.3, desirable_weight=1.2, undesirable_weight=0.9)
    ours = build_kto_trainer(job(KTOJobConfig, tiny_model_dir, pairs_file, tmp_path / "ours", **values))
    assert type(ours) is GuardedKTOTrainer
    assert (ours.beta, ours.desirable_weight, ours.undesirable_weight, ours.loss_type) == (0.3, 1.2, 0.9, "kto")
    assert len(ours.train_dataset) == 2 * len(PAIRS) and sum(ours.train_dataset["label"]) == len(PAIRS)  # unpaired
    unpaired = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"} for p in PAIRS
                for side in ("chosen", "rejected")]
    theirs = KTOTrainer(model=load_model(tiny_model_dir), args=trl_args(KTOConfig, tmp_path / "trl", **values),
                        train_dataset=Dataset.from_list(unpaired), processing_class=load_tokenizer(tiny_model_dir))
    move_policies(ours, theirs)
    assert_same_loss_and_metrics(ours, theirs, first_batch(ours))
    assert ours._metrics["train"]["kl"][0] > 0  # the moved policy gives a non-trivial reference point
