"""``posttrain chat MODEL``: talk to a model in the terminal, its reply streamed as it is generated.

    posttrain chat runs/sft
    posttrain chat runs/base-sft --base_model_mode true --temperature 0
    echo "What is 47 + 38?" | posttrain chat runs/sft

A chat model's conversation goes through its tokenizer's chat template. A base model
(``base_model_mode``) sees the conversation as one document of ``Instruction: X\\nResponse: Y\\nEND``
exchanges (:mod:`posttrain.data.base_format`) separated by blank lines, as its few-shot prompts
are, and its reply ends at ``END``.

Lines starting with ``/`` are commands:

* ``/reset`` forgets the conversation (the system prompt stays);
* ``/system TEXT`` sets the system prompt (``/system`` alone removes it). A base model has no
  system role: the text goes first in its document, as plain text, before the first instruction;
* ``/exit`` ends the chat (so does end of input, Ctrl-D).

From a terminal it prompts for each message; otherwise (a pipe, a file) it reads one message per
line. Either way stdout carries only the replies, one after another, each ending with a newline;
notices go to stderr. ``temperature: 0`` is greedy decoding; above 0 it samples (with ``top_p``),
seeded by ``seed``. When the conversation no longer fits the model's context with room for
``max_new_tokens``, the oldest exchanges are forgotten, with a notice.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextStreamer

from posttrain.config import config_field
from posttrain.data.base_format import END, base_format, base_prompt
from posttrain.errors import PosttrainError
from posttrain.generation.sampling import cut_at_stop
from posttrain.models import ModelArguments, free_model, load_model, load_tokenizer, render_prompt
from posttrain.runtime import get_logger, seed_everything

log = get_logger(__name__)

COMMANDS_HELP = "/reset (forget the conversation), /system TEXT (set the system prompt), /exit"


@dataclass
class ChatConfig(ModelArguments):
    max_new_tokens: int = config_field(256, help="Longest reply in tokens.", ge=1)
    temperature: float = config_field(0.7, help="Sampling temperature; 0: greedy (the most likely token every time).", ge=0)
    top_p: float = config_field(1.0, help="Nucleus sampling: sample from the smallest set of tokens with this much probability.", gt=0, le=1)
    seed: int = config_field(0, help="Sampling seed (the same seed and messages give the same replies).")
    system_prompt: str = config_field(
        "", help="System prompt to start with (/system TEXT changes it); a base model gets it as plain text before the first instruction."
    )


class ReplyStreamer(TextStreamer):
    """Writes a reply to stdout as it is generated, whole words at a time (TextStreamer's rule),
    exactly as :meth:`reply` returns it: without surrounding whitespace and cut before the stop
    string (``END`` for a base model), none of which is ever printed, not even its first letters
    while it is still unclear whether they begin the stop string."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: str | None):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stop = stop
        self.text = ""  # everything decoded so far
        self.printed = 0  # characters of the reply already written

    def reply(self) -> str:
        return cut_at_stop(self.text, [self.stop] if self.stop else None).strip()

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text
        safe = self.reply()
        if not stream_end:
            if self.stop and self.stop not in self.text:
                safe = safe[: len(safe) - _partial_stop(safe, self.stop)]
            safe = safe.rstrip()  # trailing whitespace waits: it may end the reply
        sys.stdout.write(safe[self.printed :] + ("\n" if stream_end else ""))
        sys.stdout.flush()
        self.printed = len(safe)


def _partial_stop(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that begins ``stop`` (0 if none)."""
    return next((n for n in range(min(len(stop) - 1, len(text)), 0, -1) if stop.startswith(text[-n:])), 0)


class ChatSession:
    """One conversation with one model: the exchanges so far, the system prompt, and the text
    they make for the model to continue."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: ChatConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.system_prompt = config.system_prompt
        self.chat_template_kwargs = config.chat_template_kwargs
        self.history: list[tuple[str, str]] = []  # (message, reply)

    def render(self, message: str) -> str:
        """The conversation so far plus ``message``, as the text the model continues."""
        if self.config.base_model_mode:
            parts = [self.system_prompt] if self.system_prompt else []
            parts += [base_format(said, answered) for said, answered in self.history]
            return "\n\n".join([*parts, base_prompt(message)])
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for said, answered in self.history:
            messages += [{"role": "user", "content": said}, {"role": "assistant", "content": answered}]
        return render_prompt(self.tokenizer, [*messages, {"role": "user", "content": message}], False,
                             self.chat_template_kwargs)

    def reply(self, message: str) -> str:
        """Stream the model's reply to ``message`` to stdout, remember the exchange, return the reply."""
        input_ids = self._fitted_input(message)
        stop = END if self.config.base_model_mode else None  # a chat model ends its turn by itself
        streamer = ReplyStreamer(self.tokenizer, stop)
        sampling = {"do_sample": False}
        if self.config.temperature > 0:  # top_k 0: only temperature and top_p shape the distribution
            sampling = {"do_sample": True, "temperature": self.config.temperature, "top_p": self.config.top_p, "top_k": 0}
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=self.config.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                stop_strings=[stop] if stop else None,
                tokenizer=self.tokenizer,
                streamer=streamer,
                **sampling,
            )
        reply = streamer.reply()
        self.history.append((message, reply))
        return reply

    def _fitted_input(self, message: str) -> torch.Tensor:
        """Token ids of the conversation plus ``message``, the oldest exchanges dropped until the
        reply fits in the model's context."""
        context = getattr(self.model.config, "max_position_embeddings", None)
        while True:
            ids = self.tokenizer(self.render(message), return_tensors="pt", add_special_tokens=False)["input_ids"]
            if not context or not self.history or ids.shape[1] + self.config.max_new_tokens <= context:
                return ids.to(self.model.device)
            self.history.pop(0)
            log.warning(f"the conversation no longer fits the model's context ({context} tokens): forgot the oldest exchange")

    def command(self, line: str) -> bool:
        """Carry out a ``/command`` line; False when it ends the chat."""
        name, _, argument = line.partition(" ")
        if name == "/exit":
            return False
        if name == "/reset":
            self.history.clear()
            print("(conversation forgotten)", file=sys.stderr)
        elif name == "/system":
            self.system_prompt = argument.strip()
            print(f"(system prompt {'set' if self.system_prompt else 'removed'})", file=sys.stderr)
        else:
            print(f"unknown command {name}; commands: {COMMANDS_HELP}", file=sys.stderr)
        return True


def _messages(interactive: bool) -> Iterator[str]:
    """The user's lines: prompted for at a terminal, else read from stdin, until end of input."""
    if not interactive:
        yield from sys.stdin
        return
    try:
        import readline  # noqa: F401  (importing it gives input() line editing and history)
    except ImportError:  # not on every platform
        pass
    while True:
        try:
            yield input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            return


def run_chat(config: ChatConfig) -> dict:
    """Load the model, then answer every message until ``/exit`` or the end of input."""
    seed_everything(config.seed)
    tokenizer = load_tokenizer(config.model_name_or_path, config.base_model_mode, config.trust_remote_code)
    if not config.base_model_mode and tokenizer.chat_template is None:
        raise PosttrainError(f"the tokenizer of {config.model_name_or_path} has no chat template; set base_model_mode: true for a base model")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(config.model_name_or_path, config.dtype, config.trust_remote_code, device=device)
    model.eval()
    session = ChatSession(model, tokenizer, config)
    interactive = sys.stdin.isatty()
    if interactive:
        decoding = "greedy" if config.temperature == 0 else f"temperature {config.temperature}, top_p {config.top_p}"
        print(f"chatting with {config.model_name_or_path} ({decoding}); {COMMANDS_HELP}; Ctrl-D quits", file=sys.stderr)
    try:
        for line in _messages(interactive):
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not session.command(line):
                    break
            else:
                session.reply(line)
    finally:
        free_model(model)
    return {}  # nothing to report: the conversation was the output
