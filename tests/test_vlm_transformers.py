"""The ``transformers`` VLM engine on a tiny random-weight LLaVA built on the spot (no model hub).

Random weights make any text a valid reply, so the tests check the plumbing: order, batching and
left padding (batched greedy == one at a time), truncation, usage counts and per-request errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from groundcap.vlm.chat import ChatRequest, engine
from tiny_vlm import IMAGE_SIDE, PATCH, build_tiny_vlm

OPTIONS = {"device": "cpu", "batch_size": 2}
IMAGE_TOKENS = (IMAGE_SIDE // PATCH) ** 2


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="module")
def chat(tiny_vlm):
    return engine("transformers", str(tiny_vlm), OPTIONS)


def image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def prompt_tokens(req: ChatRequest) -> int:
    """Tokens of the tiny model's rendered prompt: one per byte, IMAGE_TOKENS per image, plus BOS."""
    text = (f"system: {req.system}\n" if req.system else "") + f"user: {req.prompt}\nassistant: "
    return 1 + len(text.encode()) + IMAGE_TOKENS * len(req.images)


def mixed_requests() -> list[ChatRequest]:
    """Prompts of different lengths, 0 to 2 images of different sizes, one system prompt."""
    return [
        ChatRequest("Describe the image.", (image(40, 60, 0),), max_tokens=6),
        ChatRequest("hi", max_tokens=6),
        ChatRequest("Which of these two pictures is brighter, and why?", (image(64, 32, 1), image(100, 200, 2)),
                    system="Answer in one word.", max_tokens=6),
        ChatRequest("What colour dominates?", (image(33, 33, 3),), max_tokens=6),
        ChatRequest("A different budget.", (image(50, 50, 4),), max_tokens=3),
    ]


@pytest.mark.models
def test_one_reply_per_request_in_order(chat):
    requests = mixed_requests()
    replies = chat.generate(requests)
    assert len(replies) == len(requests)
    for req, reply in zip(requests, replies, strict=True):
        assert reply.ok and reply.error is None and isinstance(reply.text, str)
        assert reply.usage["prompt_tokens"] > 0 and 0 < reply.usage["completion_tokens"] <= req.max_tokens
        assert reply.usage["prompt_tokens"] == prompt_tokens(req)  # its own request's, padding not counted


@pytest.mark.models
def test_batched_greedy_equals_one_at_a_time(chat):
    requests = mixed_requests()
    batched = chat.generate(requests)
    alone = [chat.generate([req])[0] for req in requests]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.usage for r in batched] == [r.usage for r in alone]
    assert [r.truncated for r in batched] == [r.truncated for r in alone]


@pytest.mark.models
def test_truncated_at_max_tokens(chat):
    reply = chat.generate([ChatRequest("Say a lot.", (image(32, 32, 5),), max_tokens=2)])[0]
    assert reply.truncated and reply.usage["completion_tokens"] == 2


@pytest.mark.models
def test_eos_ends_reply_untruncated(tiny_vlm, tmp_path):
    """A copy whose generation config allows only EOS: the reply is empty and complete."""
    from transformers import GenerationConfig

    folder = Path(shutil.copytree(tiny_vlm, tmp_path / "eos_only"))
    gen = GenerationConfig.from_pretrained(folder)
    vocab = json.loads((folder / "config.json").read_text())["text_config"]["vocab_size"]
    gen.suppress_tokens = [i for i in range(vocab) if i != gen.eos_token_id]
    gen.save_pretrained(folder)
    reply = engine("transformers", str(folder), OPTIONS).generate([ChatRequest("hi", max_tokens=5)])[0]
    assert reply.text == "" and not reply.truncated and reply.usage["completion_tokens"] == 1


@pytest.mark.models
def test_sampling_repeats_with_seed(chat):
    requests = [ChatRequest("Describe.", (image(40, 40, 6),), max_tokens=6, temperature=1.0)] * 2
    assert [r.text for r in chat.generate(requests)] == [r.text for r in chat.generate(requests)]


@pytest.mark.models
def test_bad_request_fails_alone(chat):
    good = ChatRequest("Describe the image.", (image(40, 60, 0),), max_tokens=4)
    bad = ChatRequest("Describe the image.", (np.zeros((8, 8), np.uint8),), max_tokens=4)
    replies = chat.generate([good, bad, good])
    assert replies[0].ok and replies[2].ok and replies[0].text == replies[2].text
    assert not replies[1].ok and "HxWx3" in replies[1].error


@pytest.mark.models
def test_engine_is_cached_per_options(chat, tiny_vlm):
    assert engine("transformers", str(tiny_vlm), dict(OPTIONS)) is chat
    assert engine("transformers", str(tiny_vlm), {**OPTIONS, "batch_size": 3}) is not chat


def test_module_imports_without_torch():
    code = "import sys, groundcap.vlm.hf_generate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
