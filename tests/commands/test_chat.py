"""``posttrain chat``: replies streamed to stdout, the chat template or the base format with the
history and system prompt, /reset /system /exit, messages read from a pipe."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from posttrain.cli import main
from posttrain.commands.chat import ChatConfig, ChatSession, ReplyStreamer
from posttrain.models import load_model, load_tokenizer


def chat_cli(monkeypatch, capsys, stdin: str, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))  # not a TTY: one message per line
    capsys.readouterr()
    code = main(["chat", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir)


def session(model, tiny_model_dir, **values) -> ChatSession:
    config = ChatConfig(model_name_or_path=tiny_model_dir, **{"temperature": 0, "max_new_tokens": 8, **values})
    return ChatSession(model, load_tokenizer(tiny_model_dir, config.base_model_mode), config)


def greedy(model, tokenizer, text: str, max_new_tokens: int) -> str:
    """The reference: plain greedy ``generate`` on ``text``, decoded and stripped."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_piped_messages_get_greedy_replies_through_the_chat_template_with_history(model, tiny_model_dir, tokenizer,
                                                                                  monkeypatch, capsys):
    code, out, err = chat_cli(monkeypatch, capsys, "What is 2 + 3?\n\nAnd 4 + 4?\n",
                              tiny_model_dir, "--temperature", "0", "--max_new_tokens", "12")
    assert code == 0, err
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    first = greedy(model, tokenizer, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), 12)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "And 4 + 4?"}]
    second = greedy(model, tokenizer, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), 12)
    assert out == f"{first}\n{second}\n"  # stdout holds the replies and nothing else (no metrics)


def test_commands_reset_system_and_exit(tiny_model_dir, monkeypatch, capsys):
    seen = []

    def reply(self, message):
        seen.append((message, self.system_prompt, list(self.history)))
        self.history.append((message, "ok"))
        print("ok")

    monkeypatch.setattr(ChatSession, "reply", reply)
    code, out, err = chat_cli(monkeypatch, capsys, "one\n/system Be brief.\ntwo\n/bogus\n/reset\nthree\n/exit\nnever\n",
                              tiny_model_dir)
    assert code == 0, err
    assert seen == [
        ("one", "", []),
        ("two", "Be brief.", [("one", "ok")]),
        ("three", "Be brief.", []),  # /reset forgets the exchanges, not the system prompt
    ]
    assert out == "ok\nok\nok\n"
    assert "unknown command /bogus; commands: /reset" in err


def test_the_chat_template_gets_the_system_prompt_and_history(model, tiny_model_dir, tokenizer):
    chat = session(model, tiny_model_dir, system_prompt="Be brief.")
    chat.history = [("Hi", "Hello.")]
    assert chat.render("What is 2 + 3?") == tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2 + 3?"}],
        tokenize=False, add_generation_prompt=True,
    )


def test_a_base_model_sees_instruction_response_end_with_the_system_prompt_as_plain_text(model, tiny_model_dir):
    chat = session(model, tiny_model_dir, base_model_mode=True)
    assert chat.tokenizer.chat_template is None
    chat.history = [("Hi", "Hello.")]
    chat.command("/system You are terse.")
    assert chat.render("What is 2 + 3?") == (
        "You are terse.\n\nInstruction: Hi\nResponse: Hello.\nEND\n\nInstruction: What is 2 + 3?\nResponse:"
    )


def test_a_base_model_reply_stops_at_end(model, tiny_model_dir, monkeypatch, capsys):
    chat = session(model, tiny_model_dir, base_model_mode=True)
    calls = []
    real_generate = model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    reply = chat.reply("What is 2 + 3?")
    assert calls[0]["stop_strings"] == ["END"] and isinstance(calls[0]["streamer"], ReplyStreamer)
    assert calls[0]["do_sample"] is False
    assert capsys.readouterr().out == reply + "\n"
    assert chat.history == [("What is 2 + 3?", reply)]


def feed(streamer: ReplyStreamer, pieces: list[str]) -> list[str]:
    """Hand ``pieces`` to the streamer as TextStreamer does (the last one ends the reply); returns
    what each one printed to the (StringIO) stdout."""
    printed = []
    for index, piece in enumerate(pieces):
        before = len(sys.stdout.getvalue())
        streamer.on_finalized_text(piece, stream_end=index == len(pieces) - 1)
        printed.append(sys.stdout.getvalue()[before:])
    return printed


@pytest.mark.parametrize(
    "stop, pieces, expected_prints, expected_reply",
    [
        ("END", [" Five ", "plus ", "one.\n", "EN", "D\nInstruction: more", ""], ["Five", " plus", " one.", "", "", "\n"], "Five plus one."),
        ("END", [" It is an ", "EN", "GLISH word.", ""], ["It is an", "", " ENGLISH word.", "\n"], "It is an ENGLISH word."),
        (None, [" Hi ", "END ", "there", ""], ["Hi", " END", " there", "\n"], "Hi END there"),
    ],
    ids=["stops-at-END", "END-prefix-that-is-not-END", "chat-model-no-stop"],
)
def test_the_streamer_prints_the_reply_as_it_grows_and_never_the_stop_string(tokenizer, monkeypatch, stop, pieces,
                                                                             expected_prints, expected_reply):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    streamer = ReplyStreamer(tokenizer, stop)
    assert feed(streamer, pieces) == expected_prints
    assert streamer.reply() == expected_reply and sys.stdout.getvalue() == expected_reply + "\n"


def test_replies_are_streamed_while_they_are_generated(model, tiny_model_dir, monkeypatch):
    """Text reaches stdout before generation ends: some writes happen after fewer forward passes
    than the reply took."""
    forward_passes = []
    hook = model.register_forward_hook(lambda *args: forward_passes.append(1))
    writes = []

    class Recorder(io.StringIO):
        def write(self, text):
            if text:
                writes.append(len(forward_passes))
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Recorder())
    try:
        chat = session(model, tiny_model_dir, temperature=1.0, max_new_tokens=30)
        torch.manual_seed(0)
        chat.reply("Tell me a story.")
    finally:
        hook.remove()
    assert len(set(writes)) >= 2 and min(writes) < len(forward_passes), (writes, len(forward_passes))


def test_the_oldest_exchanges_go_when_the_conversation_outgrows_the_context(model, tiny_model_dir, monkeypatch, capsys):
    chat = session(model, tiny_model_dir)
    chat.history = [("How are you?", "Fine.")]
    prompt = chat.tokenizer(chat.render("Bye."), add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(model.config, "max_position_embeddings", len(prompt) + chat.config.max_new_tokens)  # one exchange fits
    chat.history.insert(0, ("Hi", "Hello."))
    chat.reply("Bye.")
    assert [said for said, _ in chat.history] == ["How are you?", "Bye."]


def test_sampling_repeats_with_its_seed(tiny_model_dir, monkeypatch, capsys):
    args = ["--temperature", "1.0", "--max_new_tokens", "16"]
    runs = [chat_cli(monkeypatch, capsys, "Tell me a story.\n", tiny_model_dir, *args, "--seed", seed)[1]
            for seed in ("1", "1", "2")]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_the_model_can_be_given_as_a_key_too(tiny_model_dir, monkeypatch, capsys):
    positional = chat_cli(monkeypatch, capsys, "Hi\n", tiny_model_dir, "--temperature", "0", "--max_new_tokens", "6")
    keyed = chat_cli(monkeypatch, capsys, "Hi\n", "--model_name_or_path", tiny_model_dir, "--temperature", "0",
                     "--max_new_tokens", "6")
    assert positional[0] == keyed[0] == 0 and positional[1] == keyed[1] != ""


def test_a_missing_model_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    code, out, err = chat_cli(monkeypatch, capsys, "Hi\n", str(tmp_path / "no-such-model"))
    assert code == 2 and out == ""
    assert err.strip() == f"posttrain chat: error: model path {tmp_path / 'no-such-model'} does not exist"


def test_help_lists_the_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "usage: posttrain chat [MODEL_NAME_OR_PATH]" in out
    for key in ("--model_name_or_path", "--base_model_mode", "--max_new_tokens", "--temperature", "--top_p", "--seed",
                "--system_prompt"):
        assert key in out
