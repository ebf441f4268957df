"""OutputHead: the logits of a model's head run outside its forward, on families whose head
transforms its output (softcapping, scales) and on the plain ones; the capture in the forward."""

import pytest
import torch
from transformers import AutoModelForCausalLM, CohereConfig, Gemma2Config, GraniteConfig, Qwen2Config

from posttrain.models.output_head import OutputHead

SMALL = {"vocab_size": 97, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8}

CONFIGS = {  # each family's own transform of the head's output, at a value that changes the logits
    "qwen2": Qwen2Config(**SMALL),
    "gemma2-softcapping": Gemma2Config(**SMALL, final_logit_softcapping=0.5),
    "cohere-logit_scale": CohereConfig(**SMALL, logit_scale=3.0),
    "granite-logits_scaling": GraniteConfig(**SMALL, logits_scaling=4.0),
}


def random_model(name):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[name]).eval()
    with torch.no_grad():  # large logits, so that a missing transform shows
        model.get_output_embeddings().weight.mul_(50.0)
    return model


IDS = torch.randint(0, 97, (3, 9))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_captured_states_give_the_models_own_logits_at_every_position(name):
    model = random_model(name)
    head = OutputHead(model)
    with torch.no_grad():
        expected = model(input_ids=IDS, logits_to_keep=6).logits  # (3, 6, V) the model's own
        with head.capturing() as captured:
            last = model(input_ids=IDS, logits_to_keep=6).logits
    assert last.shape == (3, 1, 97)  # inside the block the head projected only the last position
    assert len(captured) == 1 and captured[0].shape == (3, 6, 16)
    assert head.reproduces(captured, last)
    torch.testing.assert_close(head(captured[0]), expected, rtol=1e-5, atol=1e-5)
    assert model.get_output_embeddings()._forward_pre_hooks == {}  # the hook is gone after the block


@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "qwen2"])
def test_a_head_without_the_familys_transform_is_not_reproduced(name, monkeypatch):
    model = random_model(name)
    head = OutputHead(model)
    head.scale, head.softcap = 1.0, None  # as if the transform were unknown
    with torch.no_grad(), head.capturing() as captured:
        last = model(input_ids=IDS).logits
    assert not head.reproduces(captured, last)


def test_no_capture_or_several_are_not_reproduced():
    model = random_model("qwen2")
    head = OutputHead(model)
    with torch.no_grad():
        logits = model(input_ids=IDS, logits_to_keep=1).logits
        with head.capturing() as captured:
            model(input_ids=IDS)
            model(input_ids=IDS)
    assert not head.reproduces([], logits)  # a model that never called its head as a module
    assert not head.reproduces(captured, logits)  # two forwards in one block: which one?
    assert head.reproduces(captured[:1], logits)


def test_bf16_rounding_is_within_tolerance_and_a_real_difference_is_not():
    model = random_model("qwen2").to(torch.bfloat16)
    head = OutputHead(model)
    with torch.no_grad(), head.capturing() as captured:
        logits = model(input_ids=IDS).logits
    assert head.reproduces(captured, logits)
    assert not head.reproduces(captured, logits * 1.05)


def test_a_partitioned_head_is_not_reproduced(monkeypatch):
    """Under ZeRO-3 the head's weight outside the forward is an empty placeholder (with a ``ds_id``)."""
    model = random_model("qwen2")
    head = OutputHead(model)
    with torch.no_grad(), head.capturing() as captured:
        logits = model(input_ids=IDS).logits
    assert head.reproduces(captured, logits)
    monkeypatch.setattr(model.get_output_embeddings().weight, "ds_id", 7, raising=False)
    assert not head.reproduces(captured, logits)
