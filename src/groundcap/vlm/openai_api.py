"""``OpenAIChat``: any OpenAI-compatible ``/v1/chat/completions`` endpoint over stdlib HTTP.

Serves ``vllm serve`` and hosted APIs (Gemini's OpenAI-compatible endpoint) without a client
dependency. A thread pool keeps at most ``concurrency`` requests in flight; transient failures
(429, 5xx, dropped connections, time-outs, garbled bodies) are retried with exponential backoff,
while errors a retry would only repeat (400, 401, 404) fail their request at once. An HTTP error is one
request's: it is recorded in that reply. A server that cannot be reached at all (connection refused, unknown
host) after the retries is every request's: ``generate`` raises ``errors.EngineDead``, the requests still
queued stop without their retries, and the stage stops with its finished parts kept (a ``vllm serve`` that
died mid-part is restarted, and the re-run resumes). The API key is read from the environment per request and
never stored, logged or echoed in an error.

``response_format`` is the request's JSON schema (OpenAI's ``json_schema`` type, which vLLM's server turns
into constrained decoding and Gemini accepts), or ``json_object`` for a JSON request without one.

Gemini's OpenAI-compatible endpoint: its thinking models spend ``max_tokens`` on reasoning first, and
a reply whose budget ran out before any answer has no content; that is a recorded error saying so
(a retry with the same budget would repeat it), and ``reasoning_effort`` (``"none"`` where the model
allows) turns the thinking down. Its per-minute quotas answer 429 with the wait in the error body
(``RetryInfo.retryDelay``) rather than a Retry-After header: both are honoured, up to
``max_backoff_s``. ``seed`` and the JSON ``response_format`` are sent by default; set ``seed: null`` or
``json_response: false`` for an endpoint that refuses them.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from typing import Any

from groundcap.credentials import redact
from groundcap.errors import EngineDead, ParamsError
from groundcap.vlm.chat import ChatEngine, ChatReply, ChatRequest, brief, openai_messages

_log = logging.getLogger(__name__)
_RETRY_STATUS = {408, 429}  # and every 5xx
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


class _Retry(Exception):
    """A failure another attempt may cure; ``wait`` is the server's Retry-After in seconds, if any;
    ``unreachable``: no connection could be made (the server is down, not one request refused)."""

    def __init__(self, what: str, detail: str = "", wait: float | None = None, unreachable: bool = False) -> None:
        super().__init__(what, detail)
        self.what, self.detail, self.wait, self.unreachable = what, detail, wait, unreachable


class _Fail(Exception):
    """A failure another attempt would repeat (bad request, bad key, unknown model)."""


class OpenAIChat(ChatEngine):
    """Chat completions from an HTTP endpoint, ``concurrency`` requests at a time."""

    kind = "openai"

    def __init__(
        self,
        model: str = "",
        base_url: str = "http://localhost:8000/v1",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 120.0,
        image_format: str = "jpeg",
        max_image_side: int = 1024,
        seed: int | None = 0,
        json_response: bool = True,
        reasoning_effort: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model)
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ParamsError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env = api_key_env
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.image_format = image_format
        self.max_image_side = max_image_side
        self.seed = seed
        self.json_response = json_response
        self.reasoning_effort = reasoning_effort
        self.extra_body = dict(extra_body or {})
        self._sleep = time.sleep  # tests swap in a recorder so retries do not really wait

    def generate(self, requests: list[ChatRequest]) -> list[ChatReply]:
        if not requests:
            return []
        gone: list[str] = []  # why the server is unreachable, once a request found it so: the others stop

        def complete(req: ChatRequest) -> ChatReply:
            return self._complete(req, gone)

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(complete, requests))

    def _body(self, req: ChatRequest) -> dict[str, Any]:
        """The JSON body; ``extra_body`` is merged last, and a key set to None there is left out."""
        body: dict[str, Any] = {
            "model": self.model or None,
            "messages": openai_messages(req, self.image_format, self.max_image_side),
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "seed": self.seed,
            "reasoning_effort": self.reasoning_effort,
        }
        if req.json_schema and self.json_response:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": req.json_schema}}
        elif req.json_mode and self.json_response:
            body["response_format"] = {"type": "json_object"}
        body.update(self.extra_body)
        return {key: value for key, value in body.items() if value is not None}

    def _complete(self, req: ChatRequest, gone: list[str]) -> ChatReply:
        """The reply to ``req``; raises ``EngineDead`` when the server is unreachable (``gone`` says why, for
        the requests still to send)."""
        try:
            data = json.dumps(self._body(req)).encode()
        except Exception as exc:  # a request that cannot be encoded (bad image array) fails alone
            return ChatReply(error=f"could not encode the request: {type(exc).__name__}: {exc}")
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if gone:
                raise EngineDead(gone[0])
            try:
                return self._post(data)
            except _Fail as exc:
                return ChatReply(error=self._redact(str(exc)))
            except _Retry as exc:
                last = exc
                if attempt + 1 < attempts:
                    delay = exc.wait if exc.wait is not None else self.backoff_s * 2**attempt
                    delay = min(delay, self.max_backoff_s)  # a runaway Retry-After must not stall a stage
                    _log.debug("%s: %s; retrying in %.1f s", exc.what, self._redact(exc.detail), delay)
                    self._sleep(delay)
        detail = f": {last.detail}" if last.detail else ""
        error = self._redact(f"{last.what} after {attempts} attempts{detail}")
        if last.unreachable:
            gone.append(f"the server at {self.url} cannot be reached ({error}): is it up? Start it (again)")
            raise EngineDead(gone[0])
        return ChatReply(error=error)

    def _post(self, data: bytes) -> ChatReply:
        """One attempt: the reply, or ``_Retry`` / ``_Fail`` saying what went wrong."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail, hinted = _server_message(exc)
            if exc.code in _RETRY_STATUS or exc.code >= 500:
                wait = _retry_after(exc.headers)
                raise _Retry(f"HTTP {exc.code}", detail, hinted if wait is None else wait) from None
            if exc.code in (401, 403):
                detail += f" (API key from ${self.api_key_env}{'' if key else ', which is unset'})"
            raise _Fail(f"HTTP {exc.code}: {detail}") from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                raise _Retry("timed out", f"no reply within {self.timeout_s:g} s") from None
            raise _Retry("connection failed", brief(f"{type(reason).__name__}: {reason}"),
                         unreachable=_unreachable(reason)) from None
        return _parse_completion(payload)

    def _redact(self, text: str) -> str:
        """``text`` with the API key blanked, should a server or proxy have echoed it."""
        return redact(text, os.environ.get(self.api_key_env))


def _unreachable(reason: object) -> bool:
    """Whether a connection error means no server answers there at all: refused, no route, unknown host
    (a reset or a time-out may be one request's trouble)."""
    return isinstance(reason, socket.gaierror) or getattr(reason, "errno", None) in _UNREACHABLE_ERRNOS


def _parse_completion(payload: bytes) -> ChatReply:
    """The first choice of a chat-completions body; anything else is retried as a garbled reply."""
    try:
        data = json.loads(payload)
        choice = data["choices"][0]
        text, finish = choice["message"]["content"], choice.get("finish_reason")
        usage = dict(data.get("usage") or {})
    except (ValueError, LookupError, TypeError, AttributeError):
        raise _Retry("malformed reply", brief(payload.decode(errors="replace"), 200)) from None
    if not isinstance(text, str):
        if finish == "length":  # the budget went to thinking: the same request would spend it the same way
            raise _Fail("no content: the max_tokens budget ran out before any answer (a thinking model's "
                        "reasoning counts against it); raise max_tokens or set reasoning_effort")
        raise _Retry("reply without message content", f"finish_reason {finish!r}")
    counts = {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}
    return ChatReply(text=text, truncated=finish == "length", usage=counts)


def _server_message(exc: urllib.error.HTTPError) -> tuple[str, float | None]:
    """The error message of an OpenAI-style error body (Gemini wraps it in a list), shortened, and the wait
    a Google ``RetryInfo`` detail asks for (``"retryDelay": "37s"``), if any."""
    try:
        raw = exc.read()
    except (OSError, http.client.HTTPException):
        return exc.reason or "", None
    message, wait = None, None
    try:
        data = json.loads(raw)
        data = data[0] if isinstance(data, list) else data
        error = data.get("error", data)
        message = error.get("message") if isinstance(error, dict) else error
        for detail in (error.get("details") or []) if isinstance(error, dict) else []:
            delay = detail.get("retryDelay") if isinstance(detail, dict) else None
            if isinstance(delay, str) and delay.endswith("s"):
                wait = float(delay[:-1])
    except (ValueError, LookupError, AttributeError):
        pass
    text = message if isinstance(message, str) and message else raw.decode(errors="replace") or str(exc.reason)
    return brief(text), wait


def _retry_after(headers: Message | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (exponential backoff applies)."""
    try:
        seconds = float((headers or {}).get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
