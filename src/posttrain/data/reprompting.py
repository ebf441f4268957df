"""SDPO reprompting: the teacher's context for each sampled completion.

Text and token ids only, no trainer: the tasks word their hinted prompts with it
(:func:`reprompt_text`), and the SDPO trainer builds its teacher inputs with it.

The teacher is the student model shown a better context: a successful sibling answer from the
same group (a *demonstration*) and/or the environment's feedback on this sample's failure.
Rules (Hübotter et al. 2026; defaults as in the reference code):

* a sample is successful when its reward ≥ ``success_reward_threshold``;
* the demonstration for sample i is the first successful completion of its group, skipping i
  itself when ``dont_reprompt_on_self_success`` (so a success is never its own teacher);
  ``<think>…</think>`` is removed when ``remove_thinking_from_demonstration``;
* feedback is used when ``include_environment_feedback`` and (not
  ``environment_feedback_only_without_solution`` or there is no demonstration);
* with neither demonstration nor feedback the sample gets no distillation loss (mask 0).

:func:`first_divergence` finds where a sample leaves its demonstration, and
:func:`token_at_character` the token where the verifier's feedback says it first goes wrong, for
distillation restricted to the tokens up to there (``distillation_span: to_divergence``, a
posttrain option).

The teacher prompt is the original conversation, system messages kept, with the last user turn
replaced by ``reprompt_template.format(prompt=…, solution=…, feedback=…)``; it is rendered with
the chat template (``chat_template_kwargs`` forwarded), truncated to ``max_reprompt_len`` tokens
(``right``: keep the start, ``left``: keep the end, ``error``: refuse), and the student's
completion tokens are appended unchanged, so both models score the same tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from posttrain.config import config_field
from posttrain.errors import PosttrainError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPROMPT_TEMPLATE = "{prompt}{solution}{feedback}\n\nCorrectly solve the original question.\n"
SOLUTION_TEMPLATE = "\nCorrect solution:\n\n{successful_previous_attempt}\n\n"
FEEDBACK_TEMPLATE = "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback_raw}\n\n"
_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


@dataclass
class RepromptSettings:
    """How the teacher's context is built (SDPO reference-code names and defaults)."""

    success_reward_threshold: float = config_field(1.0, help="A sample with reward >= this is a success (a demonstration).")
    dont_reprompt_on_self_success: bool = config_field(True, help="Never use a sample's own success as its demonstration.")
    remove_thinking_from_demonstration: bool = config_field(True, help="Strip <think>...</think> from demonstrations.")
    include_successful_demonstration: bool = config_field(
        True, help="Show the teacher a successful sibling; false: feedback only (the paper's Table 6 ablation).",
    )
    include_environment_feedback: bool = config_field(True, help="Show the environment's feedback to the teacher.")
    environment_feedback_only_without_solution: bool = config_field(
        True, help="Use feedback only for samples without a demonstration."
    )
    reprompt_template: str = config_field(REPROMPT_TEMPLATE, help="Teacher's last user turn; fields {prompt} {solution} {feedback}.")
    solution_template: str = config_field(SOLUTION_TEMPLATE, help="Demonstration block; field {successful_previous_attempt}.")
    feedback_template: str = config_field(FEEDBACK_TEMPLATE, help="Feedback block; field {feedback_raw}.")
    max_reprompt_len: int = config_field(10240, help="Longest teacher prompt in tokens.", ge=1)
    reprompt_truncation: Literal["right", "left", "error"] = config_field(
        "right", help="Over max_reprompt_len: right keeps the start, left keeps the end, error refuses."
    )
    chat_template_kwargs: dict = config_field({}, help="Extra chat-template arguments (e.g. enable_thinking: false).")


@dataclass
class TeacherInput:
    input_ids: list[int]  # teacher prompt followed by the student's completion tokens
    completion_start: int  # index of the first completion token in input_ids
    has_signal: bool  # False: neither demonstration nor feedback (distillation mask 0)
    demonstration: int | None = None  # batch index of the sample shown as the demonstration


def demonstration_index(index: int, rewards: list[float], settings: RepromptSettings) -> int | None:
    """Index in the group of the first successful sample (not ``index`` itself, by default); None
    with ``include_successful_demonstration: false``."""
    if not settings.include_successful_demonstration:
        return None
    for j, reward in enumerate(rewards):
        if reward >= settings.success_reward_threshold and not (j == index and settings.dont_reprompt_on_self_success):
            return j
    return None


def select_demonstration(index: int, completions: list[str], rewards: list[float], settings: RepromptSettings) -> str | None:
    """The first successful completion of the group (not ``index`` itself, by default)."""
    j = demonstration_index(index, rewards, settings)
    return None if j is None else _demonstration_text(completions[j], settings)


def _demonstration_text(completion: str, settings: RepromptSettings) -> str:
    return _THINK.sub("", completion) if settings.remove_thinking_from_demonstration else completion


def token_at_character(tokenizer: "PreTrainedTokenizerBase", ids: list[int], offset: int) -> int | None:
    """Index of the token of ``ids`` whose decoded text holds character ``offset`` of the decoded
    whole (special tokens skipped), or None when the text is no longer than ``offset``: the
    smallest ``j`` with ``len(decode(ids[: j + 1])) > offset``, by bisection (decoded prefixes only
    grow). Where the verifier locates a completion's first error in its text, this is the token."""
    def decoded_length(count: int) -> int:
        return len(tokenizer.decode(ids[:count], skip_special_tokens=True))

    if decoded_length(len(ids)) <= offset:
        return None
    low, high = 1, len(ids)  # the answer's token count j + 1 lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if decoded_length(middle) <= offset else (low, middle)
    return low - 1


def first_divergence(ids: Sequence, demonstration_ids: Sequence) -> int | None:
    """Position of the first token of ``ids`` that differs from ``demonstration_ids`` (a token
    past the demonstration's end differs), or None when ``ids`` never leaves it (token ids, or the
    characters of two texts)::

        first_divergence([5, 6, 7, 8], [5, 6, 9]) == 2
        first_divergence([5, 6], [5, 6, 9]) is None

    For a failed sample beside a successful sibling of a deterministic task this is its first
    mistake: the tokens before it agree with a right answer, those after it continue from a
    context the demonstration never had."""
    for position, token in enumerate(ids):
        if position >= len(demonstration_ids) or token != demonstration_ids[position]:
            return position
    return None


def reprompt_text(prompt: str, demonstration: str | None, feedback: str | None, settings: RepromptSettings) -> str:
    """The teacher's last user turn: the prompt with the demonstration and/or feedback blocks."""
    solution = settings.solution_template.format(successful_previous_attempt=demonstration) if demonstration is not None else ""
    feedback_text = settings.feedback_template.format(feedback_raw=feedback) if feedback else ""
    return settings.reprompt_template.format(prompt=prompt, solution=solution, feedback=feedback_text)


def teacher_messages(
    messages: list[dict], demonstration: str | None, feedback: str | None, settings: RepromptSettings
) -> list[dict] | None:
    """The reprompted conversation, or None when there is nothing to teach with."""
    use_feedback = bool(feedback) and settings.include_environment_feedback and (
        not settings.environment_feedback_only_without_solution or demonstration is None
    )
    if demonstration is None and not use_feedback:
        return None
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise PosttrainError("SDPO reprompting needs a user turn in the prompt")
    content = reprompt_text(messages[last_user]["content"], demonstration, feedback if use_feedback else None, settings)
    return [*messages[:last_user], {**messages[last_user], "content": content}, *messages[last_user + 1 :]]


def build_teacher_inputs(
    tokenizer: "PreTrainedTokenizerBase",
    prompts: list[list[dict]],
    completion_ids: list[list[int]],
    completions: list[str],
    rewards: list[float],
    feedbacks: list[str | None],
    group_size: int,
    settings: RepromptSettings,
    select: range | None = None,
) -> list[TeacherInput]:
    """Teacher inputs for a batch laid out as consecutive groups of ``group_size`` samples of
    the same prompt (GRPO's layout). ``feedbacks[i]`` belongs to sample i only.

    ``select`` builds only those samples (a process's share of a batch gathered from all
    processes); every sample of a group still serves as a possible demonstration.
    """
    if len(prompts) % group_size:
        raise ValueError(f"batch of {len(prompts)} samples is not a whole number of groups of {group_size}")
    inputs = []
    for i in select if select is not None else range(len(prompts)):
        messages, ids = prompts[i], completion_ids[i]
        start = i - i % group_size
        group = slice(start, start + group_size)
        shown = demonstration_index(i - start, rewards[group], settings)
        demonstration = None if shown is None else _demonstration_text(completions[start + shown], settings)
        reprompted = teacher_messages(messages, demonstration, feedbacks[i], settings)
        if reprompted is None:  # no signal: the student's own prompt, masked out of the loss
            reprompted, has_signal = messages, False
        else:
            has_signal = True
        prompt_ids = tokenizer.apply_chat_template(
            reprompted, tokenize=True, add_generation_prompt=True, **settings.chat_template_kwargs
        )
        if hasattr(prompt_ids, "keys"):  # transformers 5 returns a BatchEncoding
            prompt_ids = prompt_ids["input_ids"]
        prompt_ids = _truncate(list(prompt_ids), settings)
        inputs.append(TeacherInput(prompt_ids + list(ids), len(prompt_ids), has_signal, None if shown is None else start + shown))
    return inputs


def _truncate(ids: list[int], settings: RepromptSettings) -> list[int]:
    limit = settings.max_reprompt_len
    if len(ids) <= limit:
        return ids
    if settings.reprompt_truncation == "error":
        raise PosttrainError(f"teacher prompt of {len(ids)} tokens exceeds max_reprompt_len={limit}")
    return ids[:limit] if settings.reprompt_truncation == "right" else ids[-limit:]
