"""Base-model mode in TRL's preference trainers: responses end at END, as SFT wrote them, with
no EOS after it (TRL's DPO and KTO trainers append one to every plain-text response)."""

import pytest
from transformers import AutoTokenizer

from posttrain.commands.dpo import DPOJobConfig, build_dpo_trainer
from posttrain.commands.kto import KTOJobConfig, build_kto_trainer
from posttrain.config import load_config

pytestmark = pytest.mark.slow

COMMON = dict(dataset_name="task:arithmetic", dataset_train_split="train[:4]", max_steps=1,
              per_device_train_batch_size=4, save_strategy="no", seed=0)


@pytest.mark.parametrize("command, loss_type, columns", [
    ("dpo", "sigmoid", ("chosen_ids", "rejected_ids")),  # posttrain's own loss
    ("dpo", "bco_pair", ("chosen_ids", "rejected_ids")),  # TRL's
    ("kto", "kto", ("completion_ids",)),
])
@pytest.mark.parametrize("base_model_mode", [True, False])
def test_responses_end_at_end_in_base_mode_and_keep_eos_otherwise(tiny_model_dir, tmp_path, command, loss_type,
                                                                   columns, base_model_mode):
    config_cls, build = {"dpo": (DPOJobConfig, build_dpo_trainer), "kto": (KTOJobConfig, build_kto_trainer)}[command]
    config = load_config(config_cls, values={**COMMON, "model_name_or_path": tiny_model_dir, "output_dir": str(tmp_path),
                                             "loss_type": loss_type, "base_model_mode": base_model_mode})
    dataset = build(config).train_dataset
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    endings = {tuple(ids[-2:]) for key in columns for ids in dataset[key]}
    if base_model_mode:
        assert endings == {tuple(tokenizer(" 85\nEND", add_special_tokens=False)["input_ids"][-2:])}  # "E", "ND"
    else:  # chat mode: TRL's tokens as they are, the turn closed by the template's end-of-turn token
        assert all(tokenizer.eos_token_id in ending for ending in endings)
