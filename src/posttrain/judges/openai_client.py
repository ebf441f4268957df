"""An HTTP client for OpenAI-compatible chat-completions endpoints (OpenAI, vLLM, llama.cpp, ...).

The judges that ask a language model behind an API (:class:`posttrain.judges.openai.OpenAIJudge`
for preference pairs, :class:`posttrain.topics.judges.OpenAITopicJudge` for topics) share this
client, so that the key, retries, rate limit and cache are handled once. It knows two kinds of
request, each answered by a JSON object:

* :meth:`OpenAIClient.ask_json`: chat messages in JSON mode (the object is the reply's content,
  also when a model wraps it in a Markdown code fence);
* :meth:`OpenAIClient.call_function`: one tool the model must call (the object is the call's
  arguments).

A caller's ``check`` turns the object into what it needs, or raises ``ValueError``: such a reply
is malformed and asked again. Only the standard library speaks HTTP here (``urllib.request``),
so no ``openai`` package is needed.

Failures are retried with exponential backoff (HTTP 429 and 5xx, timeouts, dropped connections,
and malformed replies); errors the user must fix (HTTP 400/401/403/404) raise at once. Replies
are cached on disk, one JSON file per request, keyed by the SHA-256 of the request payload, so
re-running an evaluation costs nothing.

The API key is read from an environment variable when the client is built and is never written
to a log, an exception message, a cache file or ``repr(client)``.
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
from posttrain.runtime import get_logger

log = get_logger(__name__)

MAX_WAIT_S = 60.0  # no single backoff (or Retry-After) wait is longer than this
RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)

Check = Callable[[dict], dict]  # a reply object -> what the caller keeps; ValueError if unusable


class OpenAIClient:
    """Requests to an OpenAI-compatible ``/chat/completions`` endpoint, with retries and a cache.

    Args:
        base_url: the API root, e.g. ``"https://api.openai.com/v1"`` or ``"http://localhost:8000/v1"``.
        model: the model name sent with each request.
        api_key_env: the environment variable holding the API key, read once here. It must be set
            unless ``base_url`` points at localhost (a local server usually needs no key); the
            ``Authorization`` header is sent only when there is a key.
        cache_dir: a directory for the on-disk cache of replies (None: no cache).
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
        _check_settings(base_url, model, timeout, max_retries, backoff, requests_per_minute)
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
            f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"has_key={self._key.value is not None}, cache_dir={str(self.cache_dir) if self.cache_dir else None!r}, "
            f"temperature={self.temperature!r})"
        )

    # -- the two kinds of request -----------------------------------------------------------------

    def ask_json(self, messages: list[dict], check: Check) -> dict:
        """Send chat ``messages`` in JSON mode; returns the reply's JSON object after ``check``."""
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "response_format": {"type": "json_object"},
        }
        return self._request(payload, check, _content_json)

    def call_function(self, content: str, function: dict, check: Check) -> dict:
        """Ask with one tool the model must call (OpenAI function calling); returns the call's
        arguments after ``check``.

        ``function`` is ``{"name", "description", "parameters": <JSON schema>}``.
        """
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.temperature,
            "tools": [{"type": "function", "function": function}],
            "tool_choice": {"type": "function", "function": {"name": function["name"]}},
        }
        return self._request(payload, check, _tool_arguments)

    # -- requests ---------------------------------------------------------------------------------

    def _request(self, payload: dict, check: Check, extract: Callable[[bytes], dict]) -> dict:
        """The checked reply to one request: from the cache, or from the API with retries.

        ``extract`` takes the JSON object out of the raw response.
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
                raw = extract(self._post(body))
                reply = _checked(check, raw)
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
                self._wait_before_retry(attempt, problem, retry_after)
        raise PosttrainError(self._redact(
            f"openai judge: {self.url} failed {self.max_retries} times; last problem: {_one_line(problem)}"
        ))

    def _wait_before_retry(self, attempt: int, problem: str, retry_after: float | None) -> None:
        """Log the failure and back off: the server's Retry-After, else ``backoff * 2**attempt``."""
        wait = retry_after if retry_after is not None else self.backoff * 2**attempt
        wait = min(MAX_WAIT_S, wait)
        log.warning(self._redact(
            f"openai judge: {self.url}: {_one_line(problem)}; retry {attempt + 1}/{self.max_retries - 1} in {wait:.3g}s"
        ))
        if wait > 0:
            self.sleep(wait)

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

    def _cache_get(self, key: str, check: Check) -> dict | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.json"
        try:
            with open(path, encoding="utf-8") as handle:
                value = json.load(handle)
            return check(value) if isinstance(value, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning(f"openai judge: ignoring unreadable cache file {path}: {_one_line(err, 200)}")
            return None

    def _cache_put(self, key: str, raw: dict) -> None:
        """Store the reply object as the model gave it (checked again when read back)."""
        if self.cache_dir is not None:
            write_json(self.cache_dir / f"{key}.json", raw)


def _check_settings(base_url: str, model: str, timeout: float, max_retries: int, backoff: float,
                    requests_per_minute: float | None) -> None:
    """A ConfigError for a setting no request could work with, before any request is made."""
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


class _Transient(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection error)."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that retrying cannot fix (400, 401, 403, 404, ...)."""


def _checked(check: Check, reply: dict) -> dict:
    """``check(reply)``, its ValueError a malformed reply (a ValueError elsewhere stays a bug)."""
    try:
        return check(reply)
    except ValueError as err:
        raise _Malformed(str(err)) from None


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
