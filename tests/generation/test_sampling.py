"""Unit tests for posttrain.generation.sampling.cut_at_stop."""

from __future__ import annotations

import pytest

from posttrain.generation.sampling import cut_at_stop


@pytest.mark.parametrize(
    "text, stops, expected",
    [
        ("Answer: 85\nEND\nmore", ["END"], "Answer: 85\n"),
        ("abc STOP def END ghi", ["END", "STOP"], "abc "),  # earliest wins, not first listed
        ("abc END def STOP", ["STOP", "END"], "abc "),
        ("xxENDyyEND", ["END"], "xx"),  # first occurrence of a stop
        ("ENDstart", ["END"], ""),  # stop at position 0 gives the empty string
        ("abcdef", ["cde", "cd"], "ab"),  # overlapping stops at the same index
        ("no stops here", ["END", "STOP"], "no stops here"),
        ("", ["END"], ""),
    ],
)
def test_cut_at_stop(text, stops, expected):
    """The text is cut before the earliest occurrence of any stop string."""
    assert cut_at_stop(text, stops) == expected


@pytest.mark.parametrize("stops", [None, []])
def test_cut_at_stop_without_stops_returns_text(stops):
    """None or an empty list leaves the text unchanged."""
    assert cut_at_stop("Answer: 1 END", stops) == "Answer: 1 END"


# --- with the tiny model -------------------------------------------------------------------


def test_batched_greedy_equals_one_at_a_time(tiny_model_dir, tokenizer):
    """Left padding must not change what greedy decoding produces."""
    from posttrain.generation.sampling import generate
    from posttrain.models import load_model, render_prompt

    model = load_model(tiny_model_dir)
    side = tokenizer.padding_side
    prompts = [render_prompt(tokenizer, p, False) for p in ["What is 1 + 2?", "What is 12 + 34?", "Hello there, how are you today?"]]
    batched = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=3)
    single = [generate(model, tokenizer, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert tokenizer.padding_side == side  # restored after generation


def test_num_return_sequences_groups_per_prompt(tiny_model_dir, tokenizer):
    import torch

    from posttrain.generation.sampling import generate
    from posttrain.models import load_model, render_prompt

    torch.manual_seed(0)
    model = load_model(tiny_model_dir)
    prompts = [render_prompt(tokenizer, p, False) for p in ["a", "b"]]
    out = generate(model, tokenizer, prompts, num_return_sequences=3, do_sample=True, max_new_tokens=6, batch_size=2)
    assert [len(group) for group in out] == [3, 3]
    assert len(set(out[0])) > 1  # sampling gives different completions


def test_token_counts_match_an_unpadded_generate(tiny_model_dir, tokenizer):
    """Counts equal the ids a single, unpadded generate call produces before its first eos."""
    import torch

    from posttrain.generation.sampling import generate
    from posttrain.models import load_model, render_prompt

    model = load_model(tiny_model_dir)
    prompts = [render_prompt(tokenizer, p, False) for p in ["a", "What is 1 + 2?", "Tell me a long story please"]]
    _, counts = generate(model, tokenizer, prompts, max_new_tokens=7, batch_size=3, return_token_counts=True)
    for prompt, (count,) in zip(prompts, counts):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            new = model.generate(ids, max_new_tokens=7, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
        stops = [i for i, t in enumerate(new.tolist()) if t in (tokenizer.eos_token_id, tokenizer.pad_token_id)]
        assert count == (stops[0] if stops else len(new))
