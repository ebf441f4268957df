"""One loading path: local dirs, adapters, base-model mode, clear errors."""


import pytest
import torch
from peft import LoraConfig, get_peft_model

from posttrain.errors import ConfigError, PosttrainError
from posttrain.models import check_model_source, load_model, load_tokenizer, render_prompt
from posttrain.models.lora import LoraArguments


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(PosttrainError, match="does not exist"):
        check_model_source(str(tmp_path / "nope"))
    with pytest.raises(PosttrainError, match="does not exist"):
        load_model("./no-such-model")


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(PosttrainError, match="not a model directory"):
        check_model_source(str(tmp_path))


def test_hub_id_is_refused_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PosttrainError, match="does not exist"):
        check_model_source("Qwen/Qwen2.5-0.5B")


def test_base_model_mode_drops_chat_template(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, base_model_mode=True)
    assert tokenizer.chat_template is None
    assert render_prompt(tokenizer, "Add 1 and 2.", base_model_mode=True) == "Instruction: Add 1 and 2.\nResponse:"
    with pytest.raises(PosttrainError, match="base_model_mode"):
        render_prompt(tokenizer, "hi", base_model_mode=False)


def test_chat_prompt_rendering(tokenizer):
    assert render_prompt(tokenizer, "hi", base_model_mode=False).endswith("<|im_start|>assistant\n")


def _loaded_tokenizers_lack(monkeypatch, attribute):
    """Make every tokenizer load without ``attribute`` (pad_token, eos_token)."""
    from transformers import AutoTokenizer

    original = AutoTokenizer.from_pretrained

    def load_without(*args, **kwargs):
        tokenizer = original(*args, **kwargs)
        setattr(tokenizer, attribute, None)
        return tokenizer

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", load_without)


def test_tokenizer_without_pad_uses_eos(tiny_model_dir, monkeypatch):
    _loaded_tokenizers_lack(monkeypatch, "pad_token")
    tokenizer = load_tokenizer(tiny_model_dir)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"


def test_tokenizer_without_eos_is_an_error(tiny_model_dir, monkeypatch):
    _loaded_tokenizers_lack(monkeypatch, "eos_token")
    with pytest.raises(PosttrainError, match="no eos_token"):
        load_tokenizer(tiny_model_dir)


def test_adapter_directory_loads_base_plus_merged_adapter(tiny_model_dir, tmp_path):
    base = load_model(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7]])
    expected = peft_model(ids).logits
    merged = load_model(str(tmp_path / "adapter"))
    assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
    assert not hasattr(merged, "peft_config")  # merged into plain weights


PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_lora_defaults_follow_the_spec(tiny_model_dir):
    """r=16, alpha=32, dropout 0.1 on every projection of a Llama-style model (the tiny Qwen2)."""
    config = LoraArguments(use_peft=True).lora_config(load_model(tiny_model_dir))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.1)
    assert sorted(config.target_modules) == PROJECTIONS
    assert LoraArguments(use_peft=False).lora_config(load_model(tiny_model_dir)) is None


def micro(config_class, **sizes):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config_class(vocab_size=64, **sizes))


@pytest.mark.parametrize("architecture, expected", [
    ("gpt2", ["c_attn", "c_fc", "c_proj"]),  # Conv1D layers, not nn.Linear
    ("qwen3_moe", ["k_proj", "o_proj", "q_proj", "v_proj"]),  # fused experts and the router are left out
])
def test_all_linear_resolves_for_any_architecture_and_trains(architecture, expected):
    """The default targets fit GPT-2 and an MoE, and a LoRA step runs with the default dropout."""
    from peft import get_peft_model
    from transformers import GPT2Config, Qwen3MoeConfig

    model = {
        "gpt2": lambda: micro(GPT2Config, n_embd=16, n_layer=1, n_head=2, n_positions=32),
        "qwen3_moe": lambda: micro(Qwen3MoeConfig, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                   num_experts=4, num_experts_per_tok=2),
    }[architecture]()
    config = LoraArguments(use_peft=True).lora_config(model)
    assert sorted(config.target_modules) == expected
    adapted = get_peft_model(model, config)
    ids = torch.tensor([[1, 2, 3, 4]])
    adapted(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in adapted.named_parameters() if "lora_" in n)


def test_target_modules_that_match_nothing_name_the_linear_layers(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"none of \['c_attn'\] is a module of this model; its linear layers are down_proj, gate_proj"):
        LoraArguments(use_peft=True, lora_target_modules=["c_attn"]).lora_config(load_model(tiny_model_dir))


def test_qlora_needs_a_gpu(monkeypatch):
    from types import SimpleNamespace

    import torch

    from posttrain.models.loading import load_model_for_training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = SimpleNamespace(load_in_4bit=True, use_peft=True, model_name_or_path="x")
    with pytest.raises(PosttrainError, match="CUDA GPU"):
        load_model_for_training(config)


@pytest.mark.gpu
def test_qlora_loads_in_4bit_on_gpu(tiny_model_dir):
    from types import SimpleNamespace

    from posttrain.models.loading import load_model_for_training

    config = SimpleNamespace(
        load_in_4bit=True, use_peft=True, model_name_or_path=tiny_model_dir, trust_remote_code=False, gradient_checkpointing=False
    )
    model = load_model_for_training(config)
    assert getattr(model, "is_loaded_in_4bit", False)
