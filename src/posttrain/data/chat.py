"""Conversations rendered with a model's chat template: the one text that is trained, and the
tokens of it that get loss.

A loss mask is only right if it is computed on the very text that is tokenized. Real templates
make that hard: Qwen3 drops the reasoning of earlier turns once a later user turn follows,
GPT-OSS ends the last assistant turn with ``<|return|>`` but earlier ones with ``<|end|>``,
Phi-3 appends an end-of-text token only when the conversation ends, DeepSeek-V3 cannot render
tool-call arguments given as objects. So masks are never computed on per-turn renderings and
then applied to another. Each tokenizer's template is resolved once to a *training rendering*:

1. ``markers``: the template has ``{% generation %}`` markers; transformers returns the tokens
   inside them (``return_assistant_tokens_mask``) on the final rendering;
2. ``trl``: TRL ships a training version of this template (``get_training_chat_template``:
   prefix-preserving, with generation markers), rendered the same way; the tokenizer keeps its
   own template for inference;
3. ``incremental``: any other template. Assistant turn ``i`` spans from the end of
   ``messages[:i]`` rendered with a generation prompt to the end of ``messages[:i + 1]``, and both
   renderings must be prefixes of the final rendering of this very conversation; a conversation
   for which that does not hold is refused (:class:`~posttrain.errors.DataError`) rather than
   trained on shifted masks.

Routes 1 and 2 are probed once per template with sentinel messages (:func:`_probe`): the assistant
replies and their end-of-turn token must be inside the mask, the system and user text outside.

Messages may carry ``reasoning_content`` and ``tool_calls`` (assistant), ``tool`` turns and a
``tools`` list of function schemas; they reach the template as they are, and a template that
drops them (or fails on them) is a clear error naming the row, never a silent loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from posttrain.errors import DataError
from posttrain.runtime import get_logger

log = get_logger(__name__)

def check_messages(messages: object, where: str, field: str) -> list[dict]:
    """``messages`` cleaned for a template, or a DataError at ``where``.

    Every message needs a string ``role`` and a string ``content`` (``None`` or absent only beside
    ``tool_calls``). Keys a dataset's columns fill with ``None`` (an Arrow table gives every
    message every key) are dropped, since templates test ``message.tool_calls is defined``.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of messages")
    cleaned = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise DataError(f"{where}: field '{field}'[{i}] must be an object with string 'role' and 'content'")
        message = _without_none(message)
        if message.get("tool_calls") is not None:
            message.setdefault("content", "")
            if not isinstance(message["tool_calls"], list):
                raise DataError(f"{where}: field '{field}'[{i}].tool_calls must be a list")
        if not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field '{field}'[{i}] must be an object with string 'role' and 'content'")
        cleaned.append(message)
    return cleaned


def _without_none(message: dict) -> dict:
    """The message without the keys an Arrow table filled with ``None``."""
    return {key: value for key, value in message.items() if value is not None}


def message_text(value: str | list[dict]) -> str:
    """A prompt's last user turn, or a completion's text, from a string or chat messages."""
    if isinstance(value, str):
        return value
    users = [m["content"] for m in value if m["role"] == "user"]
    return users[-1] if users else value[-1]["content"]


def check_tools(tools: object, where: str) -> list[dict] | None:
    """A row's ``tools`` column: a list of function schemas, or its JSON text (hub datasets often
    store it as a string); None or empty means no tools."""
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: field 'tools' is not valid JSON ({err.msg})") from None
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise DataError(f"{where}: field 'tools' must be a list of function schemas")
    return tools


def template_name(template: str) -> str:
    """The name of a chat template as TRL ships it (``qwen3``, ``llama3_1``…), or a short hash of
    a template TRL does not know, for error messages that say which template."""
    import hashlib

    import trl

    for path in sorted((Path(trl.__file__).parent / "chat_templates").glob("*.jinja")):
        if path.read_text(encoding="utf-8") == template:
            return path.stem
    return f"custom, sha1 {hashlib.sha1(template.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class TrainingRendering:
    """How a tokenizer's conversations are rendered for training (see the module docstring)."""

    route: Literal["markers", "trl", "incremental"]
    chat_template: str  # the template rendered for training
    name: str  # the tokenizer's own template, as error messages name it


def training_rendering(tokenizer: PreTrainedTokenizerBase) -> TrainingRendering:
    """The training rendering of ``tokenizer``'s chat template, probed once per template."""
    template = tokenizer.chat_template
    if template is None:
        raise DataError("chat data needs a tokenizer with a chat template (or set base_model_mode)")
    if isinstance(template, dict):  # named variants: the default one renders conversations
        template = template["default"]
    cached = getattr(tokenizer, "_posttrain_training_rendering", None)
    if cached is None or cached[0] != template:  # the same tokenizer may get another template (tests, base mode)
        cached = (template, _resolve(tokenizer, template))
        tokenizer._posttrain_training_rendering = cached
    return cached[1]


def _resolve(tokenizer: PreTrainedTokenizerBase, template: str) -> TrainingRendering:
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    name = template_name(template)
    if has_generation_markers(template):
        rendering = TrainingRendering("markers", template, name)
    else:
        try:
            patched = get_training_chat_template(tokenizer)
        except (ValueError, TemplateError, TypeError):  # TRL has no training version of this template
            patched = None
        rendering = TrainingRendering("trl", patched, name) if patched else TrainingRendering("incremental", template, name)
    if rendering.route != "incremental":
        _probe(tokenizer, rendering)
    log.info(f"chat template {name}: loss masks from {_ROUTE_NAMES[rendering.route]}")
    return rendering


_ROUTE_NAMES = {
    "markers": "its {% generation %} markers",
    "trl": "TRL's training version of it (prefix-preserving, with {% generation %} markers)",
    "incremental": "incremental renderings, checked prefix-preserving for each conversation",
}


def _probe(tokenizer: PreTrainedTokenizerBase, rendering: TrainingRendering) -> None:
    """Refuse a marker template whose markers leave out a reply, its end-of-turn token, or take
    in a system or user turn: render sentinel messages and read back what the mask covers."""
    system, user_1, reply_1, user_2, reply_2 = ("zqxsys", "zqxuserone", "zqxreplyone", "zqxusertwo", "zqxreplytwo")
    messages = [{"role": "user", "content": user_1}, {"role": "assistant", "content": reply_1},
                {"role": "user", "content": user_2}, {"role": "assistant", "content": reply_2}]
    try:
        try:
            ids, mask = _marked(tokenizer, [{"role": "system", "content": system}, *messages], None, {}, rendering)
        except (TemplateError, TypeError):  # e.g. Gemma 1/2 refuse a system role
            system = None
            ids, mask = _marked(tokenizer, messages, None, {}, rendering)
    except (TemplateError, TypeError) as err:
        raise DataError(f"the chat template ({rendering.name}) cannot render a plain user/assistant conversation ({type(err).__name__}: "
                        f"{err}); posttrain trains text-only models: use the text model's chat template") from None
    if reply_1 not in tokenizer.decode(ids):
        raise DataError(f"the chat template ({rendering.name}) does not render plain-text message content (it expects multimodal content "
                        "parts, as vision-language processors do); posttrain trains text-only models: use the text "
                        "model's chat template")
    runs = [tokenizer.decode(run) for run in _runs(ids, mask)]
    trained = "".join(runs)
    problem = None
    if reply_1 not in trained or reply_2 not in trained:
        problem = "do not cover every assistant reply"
    elif any(text in trained for text in (system, user_1, user_2) if text):
        problem = "cover system or user text"
    else:
        first = next(run for run in runs if reply_1 in run)
        if not first[first.index(reply_1) + len(reply_1):].strip():
            problem = "leave out the end-of-turn token (the model would never learn to stop)"
    if problem:
        raise DataError(f"the {{% generation %}} markers of the chat template ({rendering.name}) {problem}; fix the markers in the "
                        "tokenizer's chat template, or remove them to let posttrain check each conversation")


def render_for_training(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    where: str,
    tools: list[dict] | None = None,
    chat_template_kwargs: dict | None = None,
) -> tuple[list[int], list[int]]:
    """``(input_ids, mask)`` of a conversation, the mask 1 on every assistant turn (its reply and
    end-of-turn token) and 0 elsewhere, on the one rendering that is trained."""
    rendering = training_rendering(tokenizer)
    kwargs = chat_template_kwargs or {}
    try:
        if rendering.route == "incremental":
            text, spans = _incremental(tokenizer, messages, where, tools, kwargs, rendering.name)
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(encoded["input_ids"])
            mask = [int(end > start and any(s <= start < e for s, e in spans)) for start, end in encoded["offset_mapping"]]
        else:
            ids, mask = _marked(tokenizer, messages, tools, kwargs, rendering)
            text = None
    except (TemplateError, TypeError) as err:
        raise DataError(f"{where}: the chat template ({rendering.name}) cannot render this conversation "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no message'})") from None
    _check_rendered(tokenizer, ids, text, messages, tools, where, rendering.name)
    return ids, mask


def _marked(tokenizer, messages, tools, kwargs, rendering: TrainingRendering) -> tuple[list[int], list[int]]:
    out = tokenizer.apply_chat_template(
        messages, tools=tools, chat_template=rendering.chat_template, tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True, **kwargs,
    )
    return list(out["input_ids"]), list(out["assistant_masks"])


def _incremental(tokenizer, messages, where, tools, kwargs, name: str) -> tuple[str, list[tuple[int, int]]]:
    """The final text and the character span of each assistant turn, each span proved to hold in
    the final text: both renderings that bound it are prefixes of it."""

    def render(part: list[dict], generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(part, tools=tools, tokenize=False, add_generation_prompt=generation_prompt, **kwargs)

    text = render(messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:i], True) if i else "", render(messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through) and len(through) > len(before)):
            raise DataError(
                f"{where}: the chat template ({name}) renders assistant turn {i} differently once later turns follow, so "
                "its loss mask cannot be placed; add {% generation %} markers around assistant replies to the "
                "tokenizer's chat template (or train one reply per row)"
            )
        spans.append((len(before), len(through)))
    return text, spans


def _check_rendered(tokenizer, ids, text, messages, tools, where, name: str) -> None:
    """A template that silently drops reasoning, tool definitions, tool calls or tool results is
    an error: the row would train without them."""
    expected = [("reasoning_content", m["reasoning_content"].strip()) for m in messages
                if isinstance(m.get("reasoning_content"), str) and m["reasoning_content"].strip()]
    expected += [("tool definition", (tool.get("function") or tool).get("name")) for tool in tools or []]
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = (call.get("function") or call) if isinstance(call, dict) else {}
            arguments = function.get("arguments")
            values = [v for v in arguments.values() if isinstance(v, str)] if isinstance(arguments, dict) else []
            expected += [("tool call", piece) for piece in (function.get("name"), *values)]
        if message["role"] == "tool" and message["content"].strip():
            expected.append(("tool result", message["content"].strip()))
    if not expected:
        return
    text = text if text is not None else tokenizer.decode(ids)
    missing = [(kind, value) for kind, value in expected if isinstance(value, str) and value not in text]
    if missing:
        kind, value = missing[0]
        what = "reasoning" if kind == "reasoning_content" else "tool calling"
        raise DataError(f"{where}: the chat template ({name}) does not render the {kind} {value[:40]!r} ({what} is "
                        f"not supported by this template); use a model whose template renders it, or drop it from the data")


def _runs(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The maximal runs of consecutive masked tokens."""
    runs, current = [], []
    for token, bit in zip(ids, mask):
        if bit:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def with_template_arguments(rows: list[dict], chat_template_kwargs: dict) -> list[dict]:
    """Rows for TRL's preference trainers, which read a row's ``chat_template_kwargs`` column each
    time they render it; the job's arguments go on every row (a row's own win)."""
    if not chat_template_kwargs:
        return rows
    return [{**row, "chat_template_kwargs": {**chat_template_kwargs, **(row.get("chat_template_kwargs") or {})}} for row in rows]


def render_generation_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    tools: list[dict] | None = None,
    chat_template_kwargs: dict | None = None,
) -> str:
    """The text a chat model is asked to continue: its own (inference) template over the
    conversation, system turns kept, with the generation prompt."""
    if tokenizer.chat_template is None:
        raise DataError("the tokenizer has no chat template; set base_model_mode: true for a base model")
    messages = [_without_none(m) for m in messages]
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True,
                                             **(chat_template_kwargs or {}))
    except (TemplateError, TypeError) as err:
        raise DataError(f"the chat template cannot render this prompt ({type(err).__name__}: {err})") from None
