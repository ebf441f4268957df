"""Shared fixtures. Everything runs offline on a CPU with the tiny model built here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from transformers.utils import logging as transformers_logging

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# transformers' log handler keeps the sys.stderr of the moment it was made, which in a test run is
# some earlier test's captured (and since closed) stream: route its records through pytest's
# logging capture instead.
transformers_logging.disable_default_handler()
transformers_logging.enable_propagation()


# The longest tests start first, in this order. `make test` runs three workers with
# `--dist loadgroup`, which hands out tests one at a time in collection order: worker 1 runs the
# quickstart's SFT stages (shared, see tests/test_recipes.py) and its DPO branch, worker 2 the
# base-model route, worker 3 the quickstart's RL branch, which waits for those SFT stages while
# the other two keep both cores busy; the trigger recipe and the rest fill in around them.
START_FIRST = [
    "test_quickstart_sft_learns_and_preference_stages_improve_on_it",
    "test_base_model_route_teaches_the_instruction_format",
    "test_quickstart_rl_stages_train_as_their_methods_from_the_sft_model",
    "test_trigger_recipe_reaches_the_issue_targets_on_held_out_questions",
]


def pytest_collection_modifyitems(config, items):
    # Then the other slow tests, then the quick ones: the many quick tests fill the gaps at the
    # end instead of one long test running on alone. The order within each group is kept.
    def order(item) -> tuple[int, int]:
        if item.name in START_FIRST:
            return (0, START_FIRST.index(item.name))
        return (1 if "slow" in item.keywords else 2, 0)

    items.sort(key=order)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's rendezvous (tests may run in parallel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def importable_module(tmp_path, monkeypatch):
    """``make(source) -> name``: writes ``source`` as a module of a unique name on ``sys.path``
    (importable as ``'<name>:function'``, as reward functions are named), forgotten afterwards."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    names = []

    def make(source: str) -> str:
        names.append(f"test_module_{uuid.uuid4().hex[:8]}")
        (folder / f"{names[-1]}.py").write_text(source)
        return names[-1]

    yield make
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A freshly built tiny Qwen2 model directory (built once per test session)."""
    from posttrain.commands.make_model import MakeModelConfig, make_model

    out = tmp_path_factory.mktemp("tiny-model")
    make_model(MakeModelConfig(out=str(out), seed=0))
    return str(out)


@pytest.fixture
def sigterm_in_step(monkeypatch):
    """``with sigterm_in_step(n): ...`` sends this process a real SIGTERM (what a scheduler sends
    before preemption) as optimizer step ``n`` of a posttrain trainer begins."""
    from posttrain.trainers.callbacks import MetricsFileCallback  # every posttrain trainer has one

    @contextlib.contextmanager
    def sigterm_in(step: int):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step - 1:
                os.kill(os.getpid(), signal.SIGTERM)

        with monkeypatch.context() as patch:
            patch.setattr(MetricsFileCallback, "on_step_begin", on_step_begin, raising=False)
            yield

    return sigterm_in


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from posttrain.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


# -- a scriptable chat-completions server -------------------------------------------------------------


class FakeAPI:
    """Replies to POSTs in the order scripted; records every request it receives."""

    def __init__(self):
        self.script: list[dict] = []
        self.requests: list[dict] = []
        self.unscripted = 0
        self.lock = threading.Lock()
        self.url = ""  # e.g. http://127.0.0.1:PORT/v1

    def reply(self, status=200, body=b"", headers=None, delay=0.0):
        if not isinstance(body, bytes):
            body = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.script.append({"status": status, "body": body, "headers": headers or {}, "delay": delay})
        return self

    def chat(self, content, **kw):
        """A 200 chat-completions response whose message content is ``content`` (a dict is JSON-encoded)."""
        text = content if isinstance(content, str) else json.dumps(content)
        body = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
        return self.reply(200, body, **kw)

    @property
    def bodies(self):
        return [r["json"] for r in self.requests]


@contextlib.contextmanager
def serve_posts(answer):
    """A local HTTP server on a free port; every POST is answered by ``answer(path, headers, raw)``,
    which returns ``(status, headers, body, delay_seconds)``. Yields the server's /v1 base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers, body, delay = answer(self.path, dict(self.headers), raw)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (a timeout test)
                pass

        def log_message(self, *args):  # keep the test output quiet
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def post_server():
    """:func:`serve_posts`, for tests that answer requests their own way."""
    return serve_posts


@pytest.fixture
def api():
    fake = FakeAPI()

    def answer(path, headers, raw):
        with fake.lock:
            fake.requests.append({"path": path, "headers": headers, "raw": raw, "json": json.loads(raw)})
            step = fake.script.pop(0) if fake.script else None
        if step is None:
            fake.unscripted += 1
            step = {"status": 599, "body": b"unscripted request", "headers": {}, "delay": 0.0}
        return step["status"], step["headers"], step["body"], step["delay"]

    with serve_posts(answer) as fake.url:
        yield fake
    assert fake.unscripted == 0, "the judge sent more requests than the test scripted"
