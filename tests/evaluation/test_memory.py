"""Evaluating several models one after another holds one model at a time: peak memory measured."""

import json
import subprocess
import sys

import pytest

# Runs in a fresh process so that its peak resident memory belongs to these evaluations alone.
PROBE = r"""
import json, sys
import torch
torch.set_num_threads(1)
from posttrain.commands.eval import EvalConfig, run_eval

work = sys.argv[1]
def peak():  # VmHWM: this process's peak resident memory, in MiB (ru_maxrss would include the parent's)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024
peaks = [peak()]
for i in range(4):
    run_eval(EvalConfig(model_name_or_path=f"{work}/model{i}", output_dir=f"{work}/eval{i}", num_examples=4, max_new_tokens=4))
    peaks.append(peak())
print(json.dumps(peaks))
"""


def write_models(tiny_model_dir, work) -> float:
    """Four different ~98 MiB models on disk; returns the size of one in MiB."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from posttrain.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                         num_key_value_heads=4, intermediate_size=1536, tie_word_embeddings=True, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    for i in range(4):
        torch.manual_seed(i)
        model = Qwen2ForCausalLM(config)
        model.save_pretrained(work / f"model{i}")
        tokenizer.save_pretrained(work / f"model{i}")
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


@pytest.mark.slow
def test_peak_memory_of_four_evaluations_is_that_of_one(tiny_model_dir, tmp_path):
    size = write_models(tiny_model_dir, tmp_path)
    result = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, check=True)
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    measured = {"size_mb": size, "peaks_mb": peaks}
    assert size > 80  # a model big enough to see: ~98 MiB of float32 weights
    first = peaks[1] - peaks[0]
    later = peaks[4] - peaks[1]
    # the measurement sees one model (the first evaluation raises the peak by about its size) ...
    assert first > 0.7 * size, measured
    # ... and three more evaluations add far less than one more model would
    assert later < 0.3 * size, measured
