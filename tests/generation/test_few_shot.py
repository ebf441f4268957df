"""Unit tests for posttrain.generation.few_shot: base-model few-shot prompts and the chat-markup check."""

from __future__ import annotations

import random
import re

import pytest

from posttrain.data.base_format import base_format
from posttrain.generation.few_shot import EXAMPLE_POOL, few_shot_prompt, has_chat_markup

POOL = [
    ("What is 1 + 1?", "Answer: 2"),
    ("Name a fruit.", "An apple."),
    ("Write two lines.", "Line one,\nline two."),  # a response spanning two lines
    ("Spell cat.", "C-A-T."),
    ("Say hi.", "Hi!"),
    ("What colour is the sky?", "Blue."),
]

_EXAMPLE = re.compile(r"Instruction: (.+?)\nResponse: (.+)\nEND", re.DOTALL)


def _parse(prompt: str, shots: int) -> tuple[list[tuple[str, str]], str]:
    """Split a few-shot prompt into its (instruction, response) examples and its final block."""
    parts = prompt.split("\n\n")
    assert len(parts) == shots + 1, parts
    examples = []
    for part in parts[:-1]:
        match = _EXAMPLE.fullmatch(part)
        assert match is not None, f"not an Instruction/Response/END example: {part!r}"
        examples.append((match.group(1), match.group(2)))
    return examples, parts[-1]


# ---------------------------------------------------------------------------------------------
# few_shot_prompt


@pytest.mark.parametrize("shots", [1, 3, 4, len(POOL)])
def test_prompt_structure(shots):
    """Exactly ``shots`` examples from the pool, blank-line separated, then the new instruction."""
    prompt = few_shot_prompt("What is 47 + 38?", random.Random(0), shots=shots, pool=POOL)
    examples, last = _parse(prompt, shots)
    assert all(example in POOL for example in examples)
    assert len(set(examples)) == shots  # drawn without repeats
    assert last == "Instruction: What is 47 + 38?\nResponse:"
    assert prompt.endswith("\nResponse:") and not prompt.endswith(" ")
    assert prompt == "\n\n".join(base_format(i, r) for i, r in examples) + "\n\nInstruction: What is 47 + 38?\nResponse:"


def test_all_shots_uses_every_example_once():
    """With shots == len(pool) every pool example appears exactly once."""
    prompt = few_shot_prompt("New question?", random.Random(3), shots=len(POOL), pool=POOL)
    examples, _ = _parse(prompt, len(POOL))
    assert sorted(examples) == sorted(POOL)


def test_default_pool_is_used_without_a_pool():
    prompt = few_shot_prompt("New question?", random.Random(1), shots=4)
    examples, last = _parse(prompt, 4)
    assert all(example in EXAMPLE_POOL for example in examples)
    assert len(set(examples)) == 4
    assert last == "Instruction: New question?\nResponse:"


def test_seeded_rng_is_reproducible():
    first = few_shot_prompt("Q?", random.Random(123), shots=3, pool=POOL)
    second = few_shot_prompt("Q?", random.Random(123), shots=3, pool=POOL)
    assert first == second


def test_different_rngs_draw_different_examples():
    """The examples (or their order) depend on the rng: ten seeds do not all give one prompt."""
    prompts = {few_shot_prompt("Q?", random.Random(seed), shots=3, pool=POOL) for seed in range(10)}
    assert len(prompts) > 1
    # and not merely the order: different seeds pick different example sets
    example_sets = {frozenset(_parse(p, 3)[0]) for p in prompts}
    assert len(example_sets) > 1


def test_rng_state_advances():
    """Successive calls with one rng differ (the rng is consumed, not re-seeded)."""
    rng = random.Random(7)
    prompts = {few_shot_prompt("Q?", rng, shots=3, pool=POOL) for _ in range(10)}
    assert len(prompts) > 1


@pytest.mark.parametrize("shots", [0, -1, len(POOL) + 1])
def test_shots_out_of_range_raises(shots):
    with pytest.raises(ValueError, match="shots must be in"):
        few_shot_prompt("Q?", random.Random(0), shots=shots, pool=POOL)


def test_shots_out_of_range_for_default_pool_raises():
    with pytest.raises(ValueError, match="shots must be in"):
        few_shot_prompt("Q?", random.Random(0), shots=len(EXAMPLE_POOL) + 1)


def test_instruction_in_pool_still_gives_exactly_shots_examples():
    """The new instruction is never one of its own examples, and there are still ``shots`` of them."""
    instruction = POOL[0][0]
    for seed in range(20):
        prompt = few_shot_prompt(instruction, random.Random(seed), shots=3, pool=POOL)
        examples, last = _parse(prompt, 3)
        assert instruction not in [i for i, _ in examples]
        assert last == f"Instruction: {instruction}\nResponse:"


def test_empty_pool_raises():
    with pytest.raises(ValueError):
        few_shot_prompt("Q?", random.Random(0), shots=1, pool=[])


# ---------------------------------------------------------------------------------------------
# has_chat_markup


@pytest.mark.parametrize(
    "marker",
    [
        "<|im_start|>", "<|im_end|>",  # ChatML (Qwen)
        "<|eot_id|>", "<|start_header_id|>",  # Llama 3
        "[INST]", "[/INST]",  # Llama 2 / Mistral
        "<start_of_turn>", "<end_of_turn>",  # Gemma
        "<|assistant|>", "<|user|>", "<|system|>",  # Zephyr / Phi
        "<|endoftext|>",
    ],
)
def test_chat_markers_are_detected(marker):
    assert has_chat_markup(marker)
    assert has_chat_markup(f"Answer: 85 {marker}\nuser\nWhat next?")
    assert has_chat_markup(f"{marker}assistant")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Answer: 85",
        "Instruction: What is 47 + 38?\nResponse: 7+8=15 carry 1. 4+3+1=8 carry 0. Answer: 85\nEND",
        "The END of the story.",
        "im_start assistant INST end_of_turn",  # the words without their brackets
        "<|im_start",  # an incomplete marker
        "[ INST ]",
        "<b>bold</b> and <start> and <|> and [/]",
    ],
)
def test_plain_text_has_no_chat_markup(text):
    assert not has_chat_markup(text)


def test_few_shot_prompt_itself_is_clean():
    """The few-shot format is plain text: the contamination check must not flag it."""
    assert not has_chat_markup(few_shot_prompt("What is 47 + 38?", random.Random(0), shots=len(EXAMPLE_POOL)))
