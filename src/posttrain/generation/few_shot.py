"""Completion-style few-shot prompts for base models, and the chat-markup contamination check.

A base model has never been taught a chat format, so it is prompted the way it was trained: a
document that already contains 3–4 ``Instruction:/Response:/END`` examples, followed by the new
instruction. Generation stops at ``END``. The examples are drawn from a varied pool (arithmetic,
facts, completion, creative, explanation) so the model imitates the format, not one topic.
"""

from __future__ import annotations

import random
import re

from posttrain.data.base_format import base_format, base_prompt

EXAMPLE_POOL = [
    ("What is 23 + 19?", "3+9=12 carry 1. 2+1+1=4 carry 0. Answer: 42"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("Complete the sentence: The early bird", "The early bird catches the worm."),
    ("Write a two-line poem about rain.", "Soft rain taps the window glass,\nand every grey hour learns to pass."),
    ("Explain in one sentence why ice floats.", "Ice is less dense than liquid water, so it floats."),
    ("Name three primary colours.", "Red, yellow and blue."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("Give a synonym for 'happy'.", "Cheerful."),
    ("Translate 'thank you' into French.", "Merci."),
    ("Summarise: The meeting moved from Monday to Wednesday because the room was booked.", "The meeting is now on Wednesday since the room was taken on Monday."),
]

# Markers of common chat templates: none may appear in a base model's output or training data.
CHAT_MARKERS = re.compile(
    r"<\|im_start\|>|<\|im_end\|>|<\|eot_id\|>|<\|start_header_id\|>|\[INST\]|\[/INST\]|"
    r"<start_of_turn>|<end_of_turn>|<\|assistant\|>|<\|user\|>|<\|system\|>|<\|endoftext\|>"
)


def few_shot_prompt(instruction: str, rng: random.Random, shots: int = 3, pool: list[tuple[str, str]] | None = None) -> str:
    """``shots`` examples drawn without replacement from ``pool``, then the new instruction."""
    pool = EXAMPLE_POOL if pool is None else pool
    candidates = [(i, r) for i, r in pool if i != instruction]  # never answer the question in the prompt
    if not 1 <= shots <= len(candidates):
        raise ValueError(f"shots must be in [1, {len(candidates)}] for this pool, got {shots}")
    examples = [base_format(i, r) for i, r in rng.sample(candidates, shots)]
    return "\n\n".join([*examples, base_prompt(instruction)])


def has_chat_markup(text: str) -> bool:
    """True when ``text`` contains a chat-template token (contamination of a base model)."""
    return CHAT_MARKERS.search(text) is not None
