"""A loopback OpenAI-compatible chat-completions server for tests, answering from a script.

    with FakeOpenAI() as server:                                # echoes each prompt back
        OpenAIChat(model="m", base_url=server.url).generate(requests)
    with FakeOpenAI([error(503), completion("hi")]) as server:  # canned replies, in arrival order
        ...
    with FakeOpenAI(lambda body, n: completion(f"#{n}")) as server:  # computed from the body
        ...

A script entry is a reply ``(status, payload, headers)``, with ``payload`` a dict sent as JSON or
raw bytes sent as they are, or just a payload (status 200), or ``None``: the connection is closed without a
reply (a server killed mid-request; ``server.kill()`` first, and later connections are refused). A script
function gets the parsed
request body and its 0-based arrival number, and may sleep to play a slow model. The server
records every request in ``server.requests`` (``Recorded``: path, JSON body, lower-cased headers)
and the most requests it was answering at once in ``server.max_in_flight``; ``user_text`` and
``images`` read a recorded body back.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

Payload = dict | bytes
Reply = tuple[int, Payload, dict]
Script = Callable[[dict, int], Reply | Payload | None]


def completion(
    content: str | None, finish_reason: str = "stop", prompt_tokens: int = 10, completion_tokens: int = 5
) -> dict:
    """A well-formed chat-completions body with one choice."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def error(status: int, message: str = "fake error", headers: dict | None = None) -> Reply:
    """An OpenAI-style error reply, e.g. ``error(429, headers={"Retry-After": "2"})``."""
    return status, {"error": {"message": message, "type": "fake_error", "code": status}}, headers or {}


def user_text(body: dict) -> str:
    """The text parts of the last user message of a request body."""
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")


def images(body: dict) -> list[Image.Image]:
    """The images of a request body, decoded from their data URLs."""
    urls = [part["image_url"]["url"] for m in body["messages"] if isinstance(m["content"], list)
            for part in m["content"] if part["type"] == "image_url"]
    return [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) for url in urls]


def echo(body: dict, n: int) -> dict:
    """The default script: the user's text back as the completion."""
    return completion(user_text(body))


@dataclass(frozen=True)
class Recorded:
    path: str
    body: dict | None  # None when the request body was not JSON
    headers: dict[str, str]


class FakeOpenAI:
    """The server; ``url`` is the ``base_url`` to give a client (``http://127.0.0.1:<port>/v1``)."""

    def __init__(self, script: Script | Sequence[Reply | Payload] | None = None) -> None:
        if script is None or callable(script):
            self._respond: Script = script or echo
        else:
            replies = list(script)
            exhausted = error(500, "fake server: script exhausted")
            self._respond = lambda body, n: replies[n] if n < len(replies) else exhausted
        self.requests: list[Recorded] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/v1"

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self._httpd.serve_forever, args=(0.01,), daemon=True).start()  # quick shutdown
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """Stop listening, as a killed server: new connections are refused (callable from a script, twice)."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, path: str, body: dict | None, headers: dict[str, str]) -> Reply | None:
        with self._lock:
            n = len(self.requests)
            self.requests.append(Recorded(path, body, headers))
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if path != "/v1/chat/completions":
            return error(404, f"no route {path}")
        if body is None:
            return error(400, "request body is not JSON")
        reply = self._respond(body, n)
        return reply if reply is None or isinstance(reply, tuple) else (200, reply, {})

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        fake: FakeOpenAI = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        try:
            reply = fake._answer(self.path, body, {k.lower(): v for k, v in self.headers.items()})
        finally:  # out of flight before the reply leaves: a client may send its next request on reading it
            fake._done()
        if reply is None:  # hang up: the handler's connection closes with nothing sent
            self.close_connection = True
            return
        status, payload, headers = reply
        try:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up waiting (time-out tests): nobody to answer
            pass

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass
