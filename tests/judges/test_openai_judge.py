"""OpenAIJudge against a real local HTTP server whose replies each test scripts.

Nothing here leaves 127.0.0.1, and nothing really waits except the one timeout test: the judge's
``sleep`` is a recorder.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from posttrain.errors import ConfigError, PosttrainError
from posttrain.judges.base import Comparison, Judge
from posttrain.judges.openai import OpenAIJudge
from posttrain.judges.openai_client import OpenAIClient

KEY = "sk-test-SECRET-123"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


@pytest.fixture
def sleeps():
    """An injected ``sleep`` that records how long it was asked to wait, and returns at once."""

    class Recorder(list):
        def __call__(self, seconds):
            self.append(seconds)

    return Recorder()


@pytest.fixture
def logs(caplog):
    """Everything the judge logs (the ``posttrain`` logger does not propagate to the root, so hook it)."""
    logger = logging.getLogger("posttrain")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="posttrain")
    yield caplog
    logger.removeHandler(caplog.handler)


def make(api, sleeps, **kw):
    kw.setdefault("max_retries", 3)
    return OpenAIJudge(api.url, model="judge-model", sleep=sleeps, **kw)


def user_message(body) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


# -- happy paths ----------------------------------------------------------------------------------------


def test_score_sends_the_chat_request_and_returns_the_score(api, key, sleeps):
    api.chat({"score": 7.5, "reason": "mostly right"})
    judge = make(api, sleeps, temperature=0.25)

    assert isinstance(judge, Judge) and judge.name == "openai"
    assert judge.score("What is 2+2?", "It is 4.", answer="4") == 7.5

    (request,) = api.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["json"]
    assert body["model"] == "judge-model"
    assert body["temperature"] == 0.25
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    text = user_message(body)
    assert "What is 2+2?" in text and "It is 4." in text and '"score"' in text
    assert judge.requests_sent == 1 and judge.cache_hits == 0 and sleeps == []


def test_compare_asks_in_both_orders_and_maps_the_second_back(api, key, sleeps):
    # (A, B): A with confidence 0.8 -> P(a) = 0.9.  (B, A): "B" is the original a, confidence 0.6 -> P(a) = 0.8.
    api.chat({"better": "A", "confidence": 0.8, "reason": "first-order reason"})
    api.chat({"better": "B", "confidence": 0.6, "reason": "second-order reason"})
    judge = make(api, sleeps)

    result = judge.compare("Capital of France?", "Paris.", "Lyon.")

    assert isinstance(result, Comparison)
    assert result.prob_a == pytest.approx(0.85)
    assert result.preferred == "a"
    assert result.confidence == pytest.approx(0.7)
    assert result.orders_agree is True
    assert result.details["reason_ab"] == "first-order reason"
    assert result.details["reason_ba"] == "second-order reason"

    first, second = (user_message(b) for b in api.bodies)
    for text in (first, second):
        assert "Capital of France?" in text and "Paris." in text and "Lyon." in text
    assert first.index("Paris.") < first.index("Lyon.")  # a shown as A
    assert second.index("Lyon.") < second.index("Paris.")  # b shown as A
    assert first.index("[Response A]") < first.index("Paris.") < first.index("[Response B]") < first.index("Lyon.")
    assert second.index("[Response A]") < second.index("Lyon.") < second.index("[Response B]") < second.index("Paris.")
    for body in api.bodies:
        assert body["response_format"] == {"type": "json_object"} and body["model"] == "judge-model"
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in api.requests)
    assert judge.requests_sent == 2


@pytest.mark.parametrize(
    "first, second, prob_a, preferred, agree",
    [
        # Position bias: "A" both times. P(a) = (0.8 + (1 - 1.0)) / 2 = 0.4 -> b, orders disagree.
        ({"better": "A", "confidence": 0.6}, {"better": "A", "confidence": 1.0}, 0.4, "b", False),
        # B then A: b wins in both orders. P(a) = (0.5 - 0.2 + (1 - 0.95)) / 2 = 0.175.
        ({"better": "B", "confidence": 0.4}, {"better": "A", "confidence": 0.9}, 0.175, "b", True),
        # Equal and opposite positional votes cancel to a tie, and the orders disagree.
        ({"better": "A", "confidence": 0.5}, {"better": "A", "confidence": 0.5}, 0.5, "tie", False),
        # A tie in one order, a for a in the other: P(a) = (0.5 + 0.7) / 2 = 0.6; the orders disagree.
        ({"better": "tie", "confidence": 0.0}, {"better": "B", "confidence": 0.4}, 0.6, "a", False),
        # Ties both times (no confidence needed for a tie).
        ({"better": "tie"}, {"better": "tie"}, 0.5, "tie", True),
    ],
)
def test_compare_prob_a_and_orders_agree(api, key, sleeps, first, second, prob_a, preferred, agree):
    api.chat({**first, "reason": "r1"}).chat({**second, "reason": "r2"})
    result = make(api, sleeps).compare("p", "resp-a", "resp-b")
    assert result.prob_a == pytest.approx(prob_a)
    assert result.preferred == preferred
    assert result.confidence == pytest.approx(abs(2 * prob_a - 1))
    assert result.orders_agree is agree


# -- retries --------------------------------------------------------------------------------------------


def test_429_honours_retry_after(api, key, sleeps, logs):
    api.reply(429, {"error": "slow down"}, headers={"Retry-After": "7"})
    api.chat({"score": 3, "reason": "ok"})
    judge = make(api, sleeps, backoff=0.5)
    assert judge.score("p", "c") == 3.0
    assert sleeps == [7.0]
    assert judge.requests_sent == 2
    assert "429" in logs.text and KEY not in logs.text


def test_429_without_retry_after_backs_off_and_long_retry_after_is_capped(api, key, sleeps):
    api.reply(429, {"error": "slow down"})
    api.reply(429, {"error": "slow down"}, headers={"Retry-After": "3600"})
    api.chat({"score": 9, "reason": "ok"})
    judge = make(api, sleeps, backoff=0.5, max_retries=3)
    assert judge.score("p", "c") == 9.0
    assert sleeps == [0.5, 60.0]


def test_5xx_retries_with_exponential_backoff(api, key, sleeps, logs):
    api.reply(500, {"error": "boom"}).reply(502, {"error": "bad gateway"}).reply(504, {"error": "timeout"})
    api.chat({"score": 6, "reason": "ok"})
    judge = make(api, sleeps, backoff=1.0, max_retries=5)
    assert judge.score("p", "c") == 6.0
    assert sleeps == [1.0, 2.0, 4.0]  # backoff * 2**attempt
    assert judge.requests_sent == 4
    assert "500" in logs.text and "502" in logs.text and "504" in logs.text and KEY not in logs.text


def test_timeout_is_retried(api, key, sleeps, logs):
    api.chat({"score": 1, "reason": "late"}, delay=3.0)  # arrives long after the client gave up
    api.chat({"score": 2, "reason": "on time"})
    judge = make(api, sleeps, timeout=0.2, backoff=0.25)
    started = time.monotonic()
    assert judge.score("p", "c") == 2.0
    assert time.monotonic() - started < 2.5  # it did not wait for the slow reply
    assert sleeps == [0.25]
    assert judge.requests_sent == 2
    assert "timed out" in logs.text


def test_connection_error_is_retried_then_reported(key, sleeps):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = OpenAIJudge(f"http://127.0.0.1:{port}/v1", "m", sleep=sleeps, max_retries=2, backoff=0.1)
    with pytest.raises(PosttrainError, match="connection error") as err:
        judge.score("p", "c")
    assert judge.requests_sent == 2 and sleeps == [0.1]
    assert f"127.0.0.1:{port}/v1/chat/completions" in str(err.value)


@pytest.mark.parametrize(
    "bad_content, problem",
    [
        ("I think it deserves a 7.", "not JSON"),
        ({"reason": "forgot the score"}, 'no "score"'),
        ({"score": 42, "reason": "too enthusiastic"}, "outside 1..10"),
        ({"score": "high", "reason": "words"}, "not a number"),
        ([7], "not a JSON object"),
    ],
)
def test_malformed_score_reply_is_retried(api, key, sleeps, logs, bad_content, problem):
    api.chat(json.dumps(bad_content) if not isinstance(bad_content, str) else bad_content)
    api.chat({"score": 8, "reason": "fine"})
    judge = make(api, sleeps, backoff=0.5)
    assert judge.score("p", "c") == 8.0
    assert judge.requests_sent == 2 and sleeps == [0.5]
    assert problem in logs.text


def test_response_that_is_not_chat_completions_is_retried(api, key, sleeps):
    api.reply(200, {"unexpected": True}).reply(200, b"<html>gateway</html>")
    api.chat({"score": 5, "reason": "ok"})
    assert make(api, sleeps).score("p", "c") == 5.0
    assert len(sleeps) == 2


def test_malformed_compare_reply_is_retried(api, key, sleeps):
    api.chat({"better": "C", "confidence": 0.5, "reason": "?"})
    api.chat({"better": "A", "confidence": 1.7, "reason": "overconfident"})
    api.chat({"better": "A", "confidence": 1.0, "reason": "ok"})
    api.chat({"better": "B", "confidence": 1.0, "reason": "ok"})
    result = make(api, sleeps, max_retries=3).compare("p", "x", "y")
    assert result.prob_a == 1.0 and result.preferred == "a" and result.orders_agree is True
    assert len(sleeps) == 2


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "  ```json {} ```  "])
def test_fenced_json_reply_is_accepted(api, key, sleeps, fence):
    api.chat(fence.replace("{}", '{"score": 4, "reason": "fenced"}'))
    judge = make(api, sleeps)
    assert judge.score("p", "c") == 4.0
    assert judge.requests_sent == 1 and sleeps == []


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_raise_at_once(api, key, sleeps, logs, status):
    # Some APIs echo the key they were given; it must still not reach the message.
    api.reply(status, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
    judge = make(api, sleeps, max_retries=5)
    with pytest.raises(PosttrainError) as err:
        judge.score("p", "c")
    message = str(err.value)
    assert str(status) in message and api.url in message
    assert KEY not in message and KEY not in logs.text
    assert judge.requests_sent == 1 and sleeps == []


def test_exhausted_retries_name_the_url_and_never_the_key(api, key, sleeps, logs):
    for _ in range(3):
        api.reply(503, {"error": f"overloaded (key {KEY})"})
    judge = make(api, sleeps, max_retries=3, backoff=0.5)
    with pytest.raises(PosttrainError) as err:
        judge.score("p", "c")
    message = str(err.value)
    assert f"{api.url}/chat/completions" in message
    assert "503" in message and "3 times" in message
    assert "\n" not in message
    assert KEY not in message and KEY not in repr(err.value) and KEY not in logs.text
    assert judge.requests_sent == 3 and sleeps == [0.5, 1.0]


def test_exhausted_retries_on_malformed_replies_name_the_last_problem(api, key, sleeps):
    api.chat("nope").chat({"score": 0, "reason": "zero"})
    with pytest.raises(PosttrainError, match=r"failed 2 times; last problem: malformed reply: .*outside 1\.\.10"):
        make(api, sleeps, max_retries=2).score("p", "c")


# -- cache ----------------------------------------------------------------------------------------------


def test_cache_answers_repeated_requests_without_the_network(api, key, sleeps, tmp_path):
    cache = tmp_path / "judge-cache"
    api.chat({"score": 7, "reason": "cached reason"})
    api.chat({"better": "A", "confidence": 0.5, "reason": "ab"}).chat({"better": "B", "confidence": 0.5, "reason": "ba"})
    judge = make(api, sleeps, cache_dir=str(cache))

    assert judge.score("p", "c") == 7.0
    first = judge.compare("p", "x", "y")
    assert judge.requests_sent == 3 and judge.cache_hits == 0

    assert judge.score("p", "c") == 7.0
    assert judge.compare("p", "x", "y") == first
    assert judge.requests_sent == 3 and judge.cache_hits == 3

    # A rerun (a new judge on the same cache) sends nothing either.
    rerun = make(api, sleeps, cache_dir=str(cache))
    assert rerun.score("p", "c") == 7.0 and rerun.compare("p", "x", "y") == first
    assert rerun.requests_sent == 0 and rerun.cache_hits == 3
    assert len(api.requests) == 3

    files = sorted(cache.glob("*.json"))
    assert len(files) == 3 and all(len(f.stem) == 64 for f in files)  # one sha256-named file per request
    contents = [f.read_text() for f in files]
    assert any(json.loads(c).get("reason") == "cached reason" for c in contents)
    assert all(KEY not in c for c in contents)
    assert not list(cache.glob(".*.tmp"))  # atomic writes left no temporaries


def test_cache_key_depends_on_the_request(api, key, sleeps, tmp_path):
    api.chat({"score": 2, "reason": "a"}).chat({"score": 3, "reason": "b"}).chat({"score": 4, "reason": "c"})
    judge = make(api, sleeps, cache_dir=str(tmp_path))
    assert judge.score("p", "c") == 2.0
    assert judge.score("p", "other completion") == 3.0
    hot = make(api, sleeps, cache_dir=str(tmp_path), temperature=0.7)
    assert hot.score("p", "c") == 4.0
    assert judge.cache_hits == 0 and hot.cache_hits == 0 and len(api.requests) == 3


def test_failures_are_not_cached_and_unreadable_cache_files_are_ignored(api, key, sleeps, tmp_path):
    api.reply(401, {"error": "no"})
    judge = make(api, sleeps, cache_dir=str(tmp_path))
    with pytest.raises(PosttrainError):
        judge.score("p", "c")
    assert list(tmp_path.iterdir()) == []

    api.chat({"score": 5, "reason": "ok"})
    assert judge.score("p", "c") == 5.0
    (path,) = tmp_path.glob("*.json")
    path.write_text("{truncated")
    api.chat({"score": 6, "reason": "refetched"})
    assert make(api, sleeps, cache_dir=str(tmp_path)).score("p", "c") == 6.0
    assert json.loads(path.read_text())["score"] == 6


# -- rate limit -----------------------------------------------------------------------------------------


def test_requests_per_minute_spaces_requests(api, key, sleeps):
    api.chat({"score": 1, "reason": "x"}).chat({"score": 2, "reason": "y"})
    judge = make(api, sleeps, requests_per_minute=600)  # one request every 0.1 s
    assert judge.score("p", "first") == 1.0
    assert sleeps == []  # the first request goes at once
    assert judge.score("p", "second") == 2.0
    assert len(sleeps) == 1 and 0.0 < sleeps[0] <= 0.1  # 0.1 s less the time the first request took


def test_requests_per_minute_with_a_frozen_clock(api, key, sleeps):
    for i in range(3):
        api.chat({"score": i + 1, "reason": "x"})
    judge = make(api, sleeps, requests_per_minute=600)
    judge._clock = lambda: 100.0  # no time passes, and the injected sleep does not advance it
    assert [judge.score("p", f"c{i}") for i in range(3)] == [1.0, 2.0, 3.0]
    assert sleeps == [pytest.approx(0.1), pytest.approx(0.2)]  # each request is slotted 0.1 s after the last


def test_no_rate_limit_by_default(api, key, sleeps):
    api.chat({"score": 1, "reason": "x"}).chat({"score": 2, "reason": "y"})
    judge = make(api, sleeps)
    judge.score("p", "first"), judge.score("p", "second")
    assert sleeps == []


# -- configuration and the key ------------------------------------------------------------------------


def test_missing_key_for_a_remote_url_is_a_config_error(monkeypatch, sleeps):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_JUDGE_KEY"):
        OpenAIJudge("https://api.example.com/v1", "gpt-x", api_key_env="MY_JUDGE_KEY", sleep=sleeps)
    monkeypatch.setenv("MY_JUDGE_KEY", KEY)
    OpenAIJudge("https://api.example.com/v1", "gpt-x", api_key_env="MY_JUDGE_KEY", sleep=sleeps)  # no request made


def test_localhost_needs_no_key_and_sends_no_authorization(api, monkeypatch, sleeps):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    api.chat({"score": 10, "reason": "local"})
    judge = make(api, sleeps)
    assert judge.score("p", "c") == 10.0
    assert "Authorization" not in api.requests[0]["headers"]
    assert "has_key=False" in repr(judge)
    OpenAIJudge("http://localhost:8000/v1", "m")  # also fine without a key


def test_the_client_alone_asks_for_json_and_hides_the_key(api, key, sleeps):
    """OpenAIClient (what the topics judge uses) sends the messages it is given, in JSON mode."""
    api.chat({"answer": 4})
    client = OpenAIClient(api.url, "m", sleep=sleeps)
    messages = [{"role": "user", "content": "2+2? Reply in JSON."}]
    assert client.ask_json(messages, lambda reply: reply) == {"answer": 4}
    (request,) = api.requests
    assert api.bodies[0]["messages"] == messages and api.bodies[0]["response_format"] == {"type": "json_object"}
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert repr(client).startswith("OpenAIClient(") and KEY not in repr(client)


def test_repr_and_attributes_never_show_the_key(key):
    judge = OpenAIJudge("https://api.example.com/v1/", "gpt-x", cache_dir="/tmp/cache")
    text = repr(judge)
    assert KEY not in text and KEY not in str(judge) and KEY not in repr(vars(judge))
    assert "OpenAIJudge(" in text and "https://api.example.com/v1" in text and "gpt-x" in text and "has_key=True" in text
    assert judge.url == "https://api.example.com/v1/chat/completions"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "api.example.com/v1"},
        {"model": ""},
        {"timeout": 0},
        {"max_retries": 0},
        {"backoff": -1},
        {"requests_per_minute": 0},
    ],
)
def test_invalid_settings_are_config_errors(key, kwargs):
    args = {"base_url": "http://localhost:8000/v1", "model": "m", **kwargs}
    with pytest.raises(ConfigError):
        OpenAIJudge(**args)
