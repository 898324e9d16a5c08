"""OpenAIChat against a real loopback HTTP server speaking the chat-completions protocol."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest

from fake_openai import FakeOpenAI, completion, error, images, user_text
from groundcap.errors import EngineDead, is_fatal
from groundcap.vlm.chat import ChatRequest, engine
from groundcap.vlm.openai_api import OpenAIChat

SECRET = "sk-test-7f3a9c1e5b"


def make(server: FakeOpenAI, sleeps: list[float] | None = None, **options) -> OpenAIChat:
    chat = OpenAIChat(model="fake-vlm", base_url=server.url, api_key_env="GROUNDCAP_TEST_KEY", **options)
    chat._sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return chat


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(prompt=text, **kw)


def test_body_carries_images_as_data_urls_and_the_settings():
    small = np.zeros((200, 300, 3), np.uint8)
    large = np.full((1000, 2000, 3), 200, np.uint8)
    req = ChatRequest(prompt="describe", images=(small, large), system="be brief", max_tokens=77,
                      temperature=0.2, json_mode=True)
    with FakeOpenAI() as server:
        [reply] = make(server, max_image_side=1024, extra_body={"top_k": 1}).generate([req])
    assert reply.text == "describe" and reply.usage == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    body = server.requests[0].body
    assert [img.size for img in images(body)] == [(300, 200), (1024, 512)]
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert user_text(body) == "describe"
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 77 and body["temperature"] == 0.2
    assert body["seed"] == 0 and body["top_k"] == 1
    assert body["response_format"] == {"type": "json_object"}


def test_extra_body_none_drops_a_key_and_empty_model_is_omitted():
    with FakeOpenAI() as server:
        OpenAIChat(base_url=server.url, extra_body={"seed": None}).generate([ask("x")])
    body = server.requests[0].body
    assert "seed" not in body and "model" not in body and "response_format" not in body


def test_bearer_key_is_sent_but_never_leaks(monkeypatch, caplog):
    monkeypatch.setenv("GROUNDCAP_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG, logger="groundcap.vlm.openai_api")

    def respond(body, n):  # a careless proxy that echoes the key back in its errors
        return error(401 if user_text(body) == "auth" else 503, f"bad token Bearer {SECRET}")

    with FakeOpenAI(respond) as server:
        chat = make(server, max_retries=1)
        replies = chat.generate([ask("auth"), ask("flaky")])
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {SECRET}"}
    assert replies[0].error.startswith("HTTP 401: bad token Bearer ***")
    assert "$GROUNDCAP_TEST_KEY" in replies[0].error
    assert replies[1].error.startswith("HTTP 503 after 2 attempts: bad token Bearer ***")
    texts = [r.error for r in replies] + [repr(chat), str(vars(chat)), caplog.text]
    assert caplog.text and not any(SECRET in t for t in texts)


def test_missing_key_sends_no_authorization(monkeypatch):
    monkeypatch.delenv("GROUNDCAP_TEST_KEY", raising=False)
    with FakeOpenAI([error(401, "no key")]) as server:
        [reply] = make(server).generate([ask("x")])
    assert "authorization" not in server.requests[0].headers
    assert reply.error == "HTTP 401: no key (API key from $GROUNDCAP_TEST_KEY, which is unset)"


def test_429_is_retried_honouring_retry_after():
    sleeps: list[float] = []
    script = [error(429, "slow down", {"Retry-After": "7"}), error(429, "slow down"), completion("done")]
    with FakeOpenAI(script) as server:
        [reply] = make(server, sleeps, backoff_s=0.5).generate([ask("x")])
    assert reply.text == "done" and len(server.requests) == 3
    assert sleeps == [7.0, 1.0]  # Retry-After, then backoff_s * 2**1


def test_backoff_is_exponential_and_capped():
    sleeps: list[float] = []
    with FakeOpenAI(lambda body, n: error(503, "overloaded", {"Retry-After": "600"} if n == 4 else {})) as server:
        [reply] = make(server, sleeps, max_retries=5, backoff_s=1.0, max_backoff_s=5.0).generate([ask("x")])
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert reply.error == "HTTP 503 after 6 attempts: overloaded"


def test_503_forever_fails_that_request_only():
    def respond(body, n):
        return error(503, "model overloaded") if user_text(body) == "bad" else completion(user_text(body))

    with FakeOpenAI(respond) as server:
        replies = make(server, max_retries=2).generate([ask("a"), ask("bad"), ask("c")])
    assert [r.text for r in replies] == ["a", None, "c"]
    assert replies[1].error == "HTTP 503 after 3 attempts: model overloaded"
    assert sum(user_text(r.body) == "bad" for r in server.requests) == 3


def test_400_is_not_retried():
    sleeps: list[float] = []
    with FakeOpenAI([error(400, "image too large " + "x" * 1000)]) as server:
        [reply] = make(server, sleeps).generate([ask("x")])
    assert len(server.requests) == 1 and sleeps == []
    assert reply.error.startswith("HTTP 400: image too large") and len(reply.error) < 400


@pytest.mark.parametrize("garbage", [b"<html>502 Bad Gateway</html>", {"id": "x", "object": "chat.completion"},
                                     completion(None), {"choices": []}])
def test_malformed_body_is_retried(garbage):
    with FakeOpenAI([(200, garbage, {}), completion("fine")]) as server:
        [reply] = make(server).generate([ask("x")])
    assert reply.text == "fine" and len(server.requests) == 2


def test_malformed_body_every_time_gives_an_error():
    with FakeOpenAI(lambda body, n: (200, b"not json", {})) as server:
        [reply] = make(server, max_retries=1).generate([ask("x")])
    assert reply.error == "malformed reply after 2 attempts: not json"


def test_timeout_is_retried_then_reported():
    def respond(body, n):
        if user_text(body) == "slow" or n == 0:
            time.sleep(0.6)
        return completion(user_text(body))

    with FakeOpenAI(respond) as server:
        chat = make(server, timeout_s=0.2, max_retries=1, concurrency=1)
        assert chat.generate([ask("quick")])[0].text == "quick"  # first attempt timed out
        [reply] = chat.generate([ask("slow")])
    assert reply.error == "timed out after 2 attempts: no reply within 0.2 s"


def test_refused_connection_after_the_retries_is_fatal():
    """No server there: not an error on this request alone but the engine gone (the stage stops, resumable)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    chat = OpenAIChat(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    chat._sleep = sleeps.append
    with pytest.raises(EngineDead) as gone:
        chat.generate([ask("x")])
    assert str(gone.value).startswith(f"the server at http://127.0.0.1:{port}/v1/chat/completions cannot be "
                                      "reached (connection failed after 3 attempts: ConnectionRefusedError")
    assert is_fatal(gone.value) and len(sleeps) == 2


def test_a_server_killed_mid_batch_stops_it_without_retrying_every_request():
    """The server dies with a request in flight: the requests in flight retry, find nothing listening and
    raise EngineDead; those still queued stop at once instead of each running its own retries into an error
    row. The same engine works again once a server is back (nothing sticks between calls)."""
    sleeps: list[float] = []

    def respond(body, n):
        if n < 3:
            return completion(user_text(body))
        server.kill()
        return None  # hung up mid-request, as a killed process

    with FakeOpenAI(respond) as server:
        chat = OpenAIChat(base_url=server.url, max_retries=2, concurrency=2)
        chat._sleep = sleeps.append
        with pytest.raises(EngineDead, match="cannot be reached .* ConnectionRefusedError"):
            chat.generate([ask(f"p{i}") for i in range(12)])
    assert len(server.requests) <= 5 and len(sleeps) <= 2 * 2  # 12 requests x 2 retries before
    with FakeOpenAI() as again:
        chat.url = again.url + "/chat/completions"
        assert [r.text for r in chat.generate([ask("a"), ask("b")])] == ["a", "b"]


def test_a_reset_connection_stays_one_requests_error():
    """A server that hangs up on one request but still listens is not gone: that request's error only."""
    def respond(body, n):
        return None if user_text(body) == "bad" else completion(user_text(body))

    with FakeOpenAI(respond) as server:
        replies = make(server, max_retries=1).generate([ask("a"), ask("bad"), ask("c")])
    assert [r.text for r in replies] == ["a", None, "c"]
    assert replies[1].error.startswith("connection failed after 2 attempts: RemoteDisconnected")


def test_length_finish_marks_truncated():
    with FakeOpenAI([completion("a long cap", finish_reason="length", completion_tokens=64)]) as server:
        [reply] = make(server).generate([ask("x")])
    assert reply.text == "a long cap" and reply.truncated and reply.usage["completion_tokens"] == 64


def test_concurrency_is_bounded_and_order_kept():
    def respond(body, n):
        time.sleep(0.1 * (1 + n % 3))  # replies finish out of order, and overlap even on a loaded machine
        return completion(user_text(body))

    prompts = [f"p{i}" for i in range(15)]
    with FakeOpenAI(respond) as server:
        replies = make(server, concurrency=3).generate([ask(p) for p in prompts])
    assert [r.text for r in replies] == prompts
    assert 2 <= server.max_in_flight <= 3


def test_unencodable_request_fails_alone():
    bad = ChatRequest(prompt="bad", images=(np.zeros((4, 4, 7), np.float64),))
    with FakeOpenAI() as server:
        replies = make(server).generate([ask("ok"), bad])
    assert replies[0].text == "ok" and replies[1].error.startswith("could not encode the request")
    assert len(server.requests) == 1


def test_factory_builds_the_engine_once():
    options = {"base_url": "http://127.0.0.1:9/v1", "concurrency": 2}
    built = engine("openai", "m", options)
    assert isinstance(built, OpenAIChat) and built.concurrency == 2
    assert engine("openai", "m", dict(options)) is built
    assert built.describe() == "m (openai)"
    with pytest.raises(ValueError, match="http"):
        OpenAIChat(base_url="localhost:8000/v1")


# --- Gemini's OpenAI-compatible endpoint ----------------------------------------------------------

def test_a_per_minute_quota_waits_as_long_as_the_body_says():
    """Gemini answers 429 with the wait in a RetryInfo detail of a list-wrapped error body, not a header."""
    quota = (429, [{"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                              "status": "RESOURCE_EXHAUSTED",
                              "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                           "retryDelay": "37s"}]}}], {})
    sleeps: list[float] = []
    with FakeOpenAI([quota, completion("done")]) as server:
        [reply] = make(server, sleeps).generate([ask("x")])
    assert reply.text == "done" and sleeps == [37.0]
    with FakeOpenAI([(*quota[:2], {"Retry-After": "300"}), completion("done")]) as server:
        sleeps.clear()
        make(server, sleeps).generate([ask("x")])
    assert sleeps == [120.0]  # minutes of quota are waited out, up to max_backoff_s (2 minutes by default)


def test_a_thinking_model_that_spends_its_budget_gives_no_content_and_a_reason_not_retries():
    with FakeOpenAI(lambda body, n: completion(None, finish_reason="length")) as server:
        [reply] = make(server, max_retries=3).generate([ask("x")])
    assert len(server.requests) == 1  # the same budget would be spent the same way
    assert "max_tokens budget ran out" in reply.error and "reasoning_effort" in reply.error


def test_reasoning_effort_seed_and_response_format_are_options():
    schema = {"type": "object", "properties": {"short": {"type": "string"}}, "required": ["short"]}
    with FakeOpenAI(lambda body, n: completion("{}")) as server:
        make(server, reasoning_effort="none").generate([ask("x", json_mode=True)])
        make(server, seed=None, json_response=False).generate([ask("y", json_mode=True, json_schema=schema)])
        make(server).generate([ask("z", json_mode=True, json_schema=schema)])
    first, second, third = (r.body for r in server.requests)
    assert first["reasoning_effort"] == "none" and first["seed"] == 0
    assert first["response_format"] == {"type": "json_object"}
    assert "seed" not in second and "response_format" not in second and "reasoning_effort" not in second
    assert third["response_format"] == {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
