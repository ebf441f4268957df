"""One loading path: local dirs, adapters, base-model mode, clear errors."""


import pytest
from peft import LoraConfig, get_peft_model

from posttrain.errors import PosttrainError
from posttrain.models import check_model_source, load_model, load_tokenizer, render_prompt
from posttrain.models.lora import ALL_PROJECTIONS, LoraArguments


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
    import torch

    base = load_model(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7]])
    expected = peft_model(ids).logits
    merged = load_model(str(tmp_path / "adapter"))
    assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
    assert not hasattr(merged, "peft_config")  # merged into plain weights


def test_lora_defaults_follow_the_spec():
    config = LoraArguments(use_peft=True).lora_config()
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.1)
    assert set(config.target_modules) == set(ALL_PROJECTIONS)
    assert LoraArguments(use_peft=False).lora_config() is None


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
