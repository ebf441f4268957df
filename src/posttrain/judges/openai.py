"""A judge that asks an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, ...).

Only the standard library speaks HTTP here (``urllib.request``), so the judge needs no ``openai``
package. Every request asks for a JSON object back:

* ``score`` asks for ``{"score": 1..10, "reason": "..."}``;
* ``compare`` asks for ``{"better": "A" | "B" | "tie", "confidence": 0..1, "reason": "..."}``,
  once with the responses in the order (A, B) and once in the order (B, A), and averages the two
  verdicts so a model's preference for the first (or second) position cancels out.

Failures are retried with exponential backoff (HTTP 429 and 5xx, timeouts, dropped connections,
and replies that are not the JSON asked for); errors the user must fix (HTTP 400/401/403/404)
raise at once. Parsed replies are cached on disk, one JSON file per request, keyed by the SHA-256
of the request payload, so re-running an evaluation costs nothing.

The API key is read from an environment variable when the judge is built and is never written to
a log, an exception message, a cache file or ``repr(judge)``.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import ipaddress
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from posttrain.artifacts import write_json
from posttrain.errors import ConfigError, PosttrainError
from posttrain.judges.base import Comparison, Judge
from posttrain.runtime import get_logger

log = get_logger(__name__)

MAX_WAIT_S = 60.0  # no single backoff (or Retry-After) wait is longer than this
NO_RETRY_STATUSES = frozenset({400, 401, 403, 404})
RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx

SYSTEM_PROMPT = (
    "You are an impartial expert judge of AI assistant responses. Judge helpfulness, correctness "
    "and clarity; ignore length and style unless they hurt the answer. Reply with a single JSON "
    "object and nothing else."
)

SCORE_TEMPLATE = """Rate the assistant's response to the user's prompt on a scale from 1 (very poor) to 10 (excellent).

[Prompt]
{prompt}

[Response]
{completion}

Reply with a JSON object: {{"score": <number from 1 to 10>, "reason": "<one or two sentences>"}}"""

COMPARE_TEMPLATE = """Two assistant responses to the same user prompt follow. Which one is better?

[Prompt]
{prompt}

[Response A]
{a}

[Response B]
{b}

Reply with a JSON object: {{"better": "A" or "B" or "tie", "confidence": <number from 0 to 1>, "reason": "<one or two sentences>"}}"""

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)


class _Secret:
    """Holds the API key; its repr (and str) never shows it, so a stray debug print cannot leak it."""

    __slots__ = ("value",)

    def __init__(self, value: str | None):
        self.value = value

    def __repr__(self) -> str:
        return "<redacted>" if self.value else "None"

    __str__ = __repr__


class _Malformed(Exception):
    """A 2xx reply that is not the JSON object asked for (retried like a transient failure)."""


def _is_localhost(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _number(reply: dict, key: str) -> float:
    if key not in reply:
        raise _Malformed(f'reply has no "{key}" field')
    value = reply[key]
    if isinstance(value, str):  # tolerate "7" and "0.8": a number written as a string
        try:
            value = float(value.strip())
        except ValueError:
            raise _Malformed(f'"{key}" is not a number: {value!r}') from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Malformed(f'"{key}" is not a number: {value!r}')
    return float(value)


def _reason(reply: dict) -> str:
    reason = reply.get("reason", "")
    return reason if isinstance(reason, str) else json.dumps(reason)


def _check_score(reply: dict) -> dict:
    score = _number(reply, "score")
    if not 1.0 <= score <= 10.0:
        raise _Malformed(f'"score" {score:g} is outside 1..10')
    return {"score": score, "reason": _reason(reply)}


def _check_compare(reply: dict) -> dict:
    if "better" not in reply:
        raise _Malformed('reply has no "better" field')
    better = reply["better"]
    if not isinstance(better, str):
        raise _Malformed(f'"better" is not a string: {better!r}')
    better = {"a": "A", "b": "B", "tie": "tie"}.get(better.strip().lower())
    if better is None:
        raise _Malformed(f'"better" must be "A", "B" or "tie", got {reply["better"]!r}')
    if better == "tie" and "confidence" not in reply:
        confidence = 0.0  # a tie needs no confidence
    else:
        confidence = _number(reply, "confidence")
        if not 0.0 <= confidence <= 1.0:
            raise _Malformed(f'"confidence" {confidence:g} is outside 0..1')
    return {"better": better, "confidence": confidence, "reason": _reason(reply)}


def _prob_first(reply: dict) -> float:
    """The probability that the response shown as A is the better one, from one verdict."""
    half = reply["confidence"] / 2
    return {"A": 0.5 + half, "B": 0.5 - half, "tie": 0.5}[reply["better"]]


def _pick(prob_a: float) -> str:
    return "a" if prob_a > 0.5 else ("b" if prob_a < 0.5 else "tie")


class OpenAIJudge(Judge):
    """A language-model judge behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: the API root, e.g. ``"https://api.openai.com/v1"`` or ``"http://localhost:8000/v1"``.
        model: the model name sent with each request.
        api_key_env: the environment variable holding the API key, read once here. It must be set
            unless ``base_url`` points at localhost (a local server usually needs no key); the
            ``Authorization`` header is sent only when there is a key.
        cache_dir: a directory for the on-disk cache of parsed replies (None: no cache).
        timeout: seconds to wait for each HTTP request.
        max_retries: how many failed attempts (HTTP 429/5xx, timeouts, connection errors,
            malformed replies) a request may use up before :class:`PosttrainError` is raised.
        backoff: the wait after the n-th failure (n = 0, 1, ...) is ``backoff * 2**n`` seconds, or
            the server's ``Retry-After`` on 429/503 when it sends one, capped at 60 s.
        requests_per_minute: a client-side rate limit: requests are spaced at least
            ``60 / requests_per_minute`` seconds apart (None: no limit).
        temperature: the sampling temperature sent with each request.
        sleep: the function used to wait (tests inject a recorder so nothing really waits).

    Attributes:
        requests_sent: HTTP requests actually sent (retries included).
        cache_hits: requests answered from the cache without touching the network.
    """

    name = "openai"
    pairwise = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        requests_per_minute: float | None = None,
        temperature: float = 0.0,
        sleep: Callable[[float], Any] = time.sleep,
    ):
        base_url = (base_url or "").strip().rstrip("/")
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https") or not urllib.parse.urlsplit(base_url).hostname:
            raise ConfigError(f"openai judge: base_url must be an http(s) URL like http://localhost:8000/v1, got {base_url!r}")
        if not model:
            raise ConfigError("openai judge: model must be a non-empty model name")
        if not timeout or timeout <= 0:
            raise ConfigError(f"openai judge: timeout must be > 0 seconds, got {timeout!r}")
        if int(max_retries) != max_retries or max_retries < 1:
            raise ConfigError(f"openai judge: max_retries must be an integer >= 1, got {max_retries!r}")
        if backoff < 0:
            raise ConfigError(f"openai judge: backoff must be >= 0 seconds, got {backoff!r}")
        if requests_per_minute is not None and not requests_per_minute > 0:
            raise ConfigError(f"openai judge: requests_per_minute must be > 0 (or None), got {requests_per_minute!r}")

        key = os.environ.get(api_key_env) or None
        if key is None and not _is_localhost(base_url):
            raise ConfigError(
                f"openai judge: the API key environment variable {api_key_env} is not set "
                f"(required for {base_url}; only a localhost URL may go without a key)"
            )

        self.base_url = base_url
        self.url = f"{base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self._key = _Secret(key)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.requests_per_minute = requests_per_minute
        self.temperature = float(temperature)
        self.sleep = sleep
        self.requests_sent = 0
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._clock = time.monotonic  # the rate limit's clock (tests may freeze it)
        self._next_request_at = 0.0  # the clock reading before which the rate limit holds requests back
        # A local server is reached directly even when http(s)_proxy is set; remote ones honour the proxy.
        handlers = [urllib.request.ProxyHandler({})] if _is_localhost(base_url) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"has_key={self._key.value is not None}, cache_dir={str(self.cache_dir) if self.cache_dir else None!r}, "
            f"temperature={self.temperature!r})"
        )

    # -- the Judge interface ----------------------------------------------------------------------

    def score(self, prompt: str, completion: str, /, **row) -> float:
        """The model's 1–10 rating of ``completion`` as an answer to ``prompt``."""
        content = SCORE_TEMPLATE.format(prompt=prompt, completion=completion)
        return self._ask(self._payload(content), _check_score)["score"]

    def compare(self, prompt: str, a: str, b: str, /, **row) -> Comparison:
        """Which of ``a`` and ``b`` is better, asked in both orders to cancel position bias."""
        ab = self._ask(self._payload(COMPARE_TEMPLATE.format(prompt=prompt, a=a, b=b)), _check_compare)
        ba = self._ask(self._payload(COMPARE_TEMPLATE.format(prompt=prompt, a=b, b=a)), _check_compare)
        prob_a_ab = _prob_first(ab)
        prob_a_ba = 1.0 - _prob_first(ba)  # in the second order, original a was shown as B
        prob_a = (prob_a_ab + prob_a_ba) / 2
        preferred = _pick(prob_a)
        return Comparison(
            preferred=preferred,
            prob_a=prob_a,
            confidence=abs(2 * prob_a - 1),
            orders_agree=_pick(prob_a_ab) == _pick(prob_a_ba),
            details={
                "reason_ab": ab["reason"],
                "reason_ba": ba["reason"],
                "reply_ab": ab,  # as the model answered, with a shown as A
                "reply_ba": ba,  # as the model answered, with b shown as A
                "prob_a_ab": prob_a_ab,
                "prob_a_ba": prob_a_ba,
            },
        )

    def call_function(self, content: str, function: dict, check: Callable[[dict], dict]) -> dict:
        """Ask with one tool the model must call (OpenAI function calling); returns the call's
        arguments after ``check`` (which raises ``ValueError`` on a reply it cannot use).

        ``function`` is ``{"name", "description", "parameters": <JSON schema>}``. Retries, rate
        limit, cache and key handling are those of every request.
        """

        def checked(arguments: dict) -> dict:
            try:
                return check(arguments)
            except ValueError as err:
                raise _Malformed(str(err)) from None

        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.temperature,
            "tools": [{"type": "function", "function": function}],
            "tool_choice": {"type": "function", "function": {"name": function["name"]}},
        }
        return self._ask(payload, checked, extract=_tool_arguments)

    # -- requests ---------------------------------------------------------------------------------

    def _payload(self, content: str) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
            "temperature": self.temperature,
            "response_format": {"type": "json_object"},
        }

    def _ask(self, payload: dict, check: Callable[[dict], dict], extract: Callable[[bytes], dict] | None = None) -> dict:
        """The checked JSON reply to one request: from the cache, or from the API with retries.

        ``extract`` takes the JSON object out of the raw response (default: the message content).
        """
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
        key = hashlib.sha256(body).hexdigest()
        cached = self._cache_get(key, check)
        if cached is not None:
            with self._lock:
                self.cache_hits += 1
            return cached

        problem = "no attempt made"
        for attempt in range(self.max_retries):
            retry_after = None
            try:
                raw = (extract or _content_json)(self._post(body))
                reply = check(raw)
            except _Fatal as err:
                raise PosttrainError(self._redact(f"openai judge: {self.url}: {err}")) from None
            except _Transient as err:
                problem, retry_after = str(err), err.retry_after
            except _Malformed as err:
                problem = f"malformed reply: {err}"
            else:
                self._cache_put(key, raw)
                return reply
            if attempt + 1 < self.max_retries:
                wait = retry_after if retry_after is not None else self.backoff * 2**attempt
                wait = min(MAX_WAIT_S, wait)
                log.warning(self._redact(
                    f"openai judge: {self.url}: {_one_line(problem)}; retry {attempt + 1}/{self.max_retries - 1} in {wait:.3g}s"
                ))
                if wait > 0:
                    self.sleep(wait)
        raise PosttrainError(self._redact(
            f"openai judge: {self.url} failed {self.max_retries} times; last problem: {_one_line(problem)}"
        ))

    def _post(self, body: bytes) -> bytes:
        """One HTTP POST; returns the raw response body."""
        self._throttle()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key.value is not None:
            headers["Authorization"] = f"Bearer {self._key.value}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._lock:
            self.requests_sent += 1
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            status = err.code
            detail = _one_line(_read_quietly(err), 200)
            message = f"HTTP {status} {err.reason}" + (f": {detail}" if detail else "")
            if status in RETRY_STATUSES or status >= 500:
                retry_after = _retry_after(err.headers.get("Retry-After")) if status in (429, 503) else None
                raise _Transient(message, retry_after) from None
            raise _Fatal(message + (" (check the API key)" if status in (401, 403) else "")) from None
        except (TimeoutError, http.client.HTTPException, urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError) or isinstance(err, TimeoutError):
                raise _Transient(f"timed out after {self.timeout:g}s", None) from None
            raise _Transient(f"connection error: {type(reason).__name__}: {reason}", None) from None
        return raw

    def _throttle(self) -> None:
        """Hold a request back until the client-side rate limit allows it."""
        if self.requests_per_minute is None:
            return
        interval = 60.0 / self.requests_per_minute
        with self._lock:
            now = self._clock()
            wait = self._next_request_at - now
            self._next_request_at = max(now, self._next_request_at) + interval
        if wait > 0:
            self.sleep(wait)

    def _redact(self, text: str) -> str:
        key = self._key.value
        return text.replace(key, "<redacted>") if key else text

    # -- cache ------------------------------------------------------------------------------------

    def _cache_get(self, key: str, check: Callable[[dict], dict]) -> dict | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.json"
        try:
            with open(path, encoding="utf-8") as handle:
                value = json.load(handle)
            return check(value) if isinstance(value, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, _Malformed) as err:
            log.warning(f"openai judge: ignoring unreadable cache file {path}: {_one_line(err, 200)}")
            return None

    def _cache_put(self, key: str, raw: dict) -> None:
        """Store the parsed reply as the model gave it (checked again when read back)."""
        if self.cache_dir is not None:
            write_json(self.cache_dir / f"{key}.json", raw)


class _Transient(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection error)."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that retrying cannot fix (400, 401, 403, 404, ...)."""


def _read_quietly(err: urllib.error.HTTPError) -> str:
    try:
        return err.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body only decorates the message
        return ""


def _content_json(raw: bytes) -> dict:
    """The JSON object inside ``choices[0].message.content`` of a chat-completions response."""
    try:
        response = json.loads(raw.decode("utf-8"))
        content = response["choices"][0]["message"]["content"]
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as err:
        raise _Malformed(f"not a chat-completions response ({type(err).__name__}: {_one_line(err, 100)})") from None
    if not isinstance(content, str):
        raise _Malformed(f"message content is not text: {content!r:.100}")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        reply = json.loads(text)
    except ValueError:
        raise _Malformed(f"content is not JSON: {_one_line(content, 120)!r}") from None
    if not isinstance(reply, dict):
        raise _Malformed(f"content is not a JSON object: {_one_line(content, 120)!r}")
    return reply


def _tool_arguments(raw: bytes) -> dict:
    """The JSON arguments of the first tool call in a chat-completions response."""
    try:
        response = json.loads(raw.decode("utf-8"))
        arguments = response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        reply = json.loads(arguments) if isinstance(arguments, str) else arguments
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as err:
        raise _Malformed(f"no usable tool call in the response ({type(err).__name__}: {_one_line(err, 100)})") from None
    if not isinstance(reply, dict):
        raise _Malformed(f"tool call arguments are not a JSON object: {reply!r:.100}")
    return reply
