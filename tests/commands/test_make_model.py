"""make-model: a standard HF directory, single-digit tokens, a working chat template."""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_directory_loads_with_plain_from_pretrained(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert json.loads((Path(tiny_model_dir) / "config.json").read_text())["model_type"] == "qwen2"
    assert model.config.vocab_size == len(tokenizer)
    ids = tokenizer("What is 12 + 34?", return_tensors="pt")["input_ids"]
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_every_digit_is_its_own_token(tokenizer):
    tokens = tokenizer.tokenize("123 + 4567 = 4690")
    digit_tokens = [t for t in tokens if any(ch.isdigit() for ch in t)]
    assert all(len(t.replace("Ġ", "")) == 1 for t in digit_tokens)
    assert "".join(t.replace("Ġ", "") for t in digit_tokens) == "12345674690"


def test_pad_eos_and_chat_template(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_any_text_round_trips(tokenizer):
    text = "Ünïcode, emoji 🙂 and tabs\tstay intact: {{name}}"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_presets_and_seed(tmp_path):
    from posttrain.commands.make_model import MakeModelConfig, make_model

    tiny = make_model(MakeModelConfig(out=str(tmp_path / "a"), preset="tiny", seed=1))
    make_model(MakeModelConfig(out=str(tmp_path / "b"), preset="tiny", seed=1))
    small = make_model(MakeModelConfig(out=str(tmp_path / "c"), preset="small", seed=1))
    assert small["parameters"] > 3 * tiny["parameters"]
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tokenizer_corpus_does_not_follow_the_tasks_wording(monkeypatch):
    """The corpus is frozen: new feedback or hint wording in the task must not change the
    vocabulary (and so every model and figure); it once did, 598 -> 593 tokens."""
    import posttrain.commands.make_model as command
    from posttrain.tasks.arithmetic import ArithmeticTask

    before = command._tokenizer_corpus()

    def reworded(self, *args, **kwargs):
        raise AssertionError("the tokenizer corpus must not call the task's feedback")

    monkeypatch.setattr(ArithmeticTask, "feedback", reworded)
    monkeypatch.setattr(ArithmeticTask, "hinted_prompt", reworded)
    assert command._tokenizer_corpus() == before
    assert any(line.endswith("is wrong; combine the column sums and the last carry.") for line in before)


def test_every_architecture_is_its_transformers_family_with_the_shared_tokenizer(tmp_path):
    """--architecture builds that family's model class at the preset's sizes; the tokenizer is the
    same except that Llama, Mistral and GPT-2 ship without a pad token, as their real ones do."""
    from posttrain.commands.make_model import ARCHITECTURES, MakeModelConfig, make_model

    classes = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
               "qwen3_moe": "Qwen3MoeForCausalLM", "mistral": "MistralForCausalLM", "gemma2": "Gemma2ForCausalLM",
               "gemma3": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM", "gpt2": "GPT2LMHeadModel",
               "gpt_oss": "GptOssForCausalLM", "olmo2": "Olmo2ForCausalLM"}
    assert set(classes) == set(ARCHITECTURES)
    reference = None
    for architecture, class_name in classes.items():
        out = tmp_path / architecture
        make_model(MakeModelConfig(out=str(out), architecture=architecture, preset="micro"))
        model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
        assert type(model).__name__ == class_name
        assert model.config.get_text_config().hidden_size == 16
        assert (tokenizer.pad_token is None) == (architecture in ("llama", "mistral", "gpt2")), architecture
        vocabulary = tokenizer.get_vocab()
        assert reference is None or vocabulary == reference
        reference = vocabulary
        ids = tokenizer("What is 1 + 2?", return_tensors="pt")["input_ids"]
        assert torch.isfinite(model(ids).logits).all()
        tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        assert tied == (architecture in ("qwen2", "gemma2", "gemma3", "gpt2")), architecture
