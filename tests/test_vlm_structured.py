"""Lenient JSON parsing of model replies, validation helpers, and bounded re-asking."""

from __future__ import annotations

import numpy as np
import pytest

from groundcap.vlm.chat import ChatEngine, ChatReply, ChatRequest
from groundcap.vlm.structured import Answer, MalformedReply, ask, parse_json, require


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! Here it is:\n```json\n{"a": [1, 2]}\n```\nAnything else?', {"a": [1, 2]}),
        ('```\n[{"id": 1}]\n```', [{"id": 1}]),
        ('The answer is {"caption": "a cat"} as requested. {"b": 2}', {"caption": "a cat"}),
        ('Regions [see below]: {"n": 2}', {"n": 2}),
        ('{"code": "```x```"}', {"code": "```x```"}),
        ('{"a": [1, 2,], "b": {"c": 3,},}', {"a": [1, 2], "b": {"c": 3}}),
        ("{'name': 'it's a dog', 'ok': True, 'gone': None, 'no': False}",
         {"name": "it's a dog", "ok": True, "gone": None, "no": False}),
        ('{"sign": "it says "STOP" here", "n": 1}', {"sign": 'it says "STOP" here', "n": 1}),
        ('{"a": "line one\nline two",}', {"a": "line one\nline two"}),
        ('{"a": [1, 2}', {"a": [1, 2]}),
        ('{"e": "caf\\u00e9 \\"q\\""}', {"e": 'café "q"'}),
    ],
)
def test_parse_json_repairs_common_breakage(text, expected):
    assert parse_json(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"caption": "a red car", "regions": [{"id": 1, "label": "car"}, {"id": 2, "lab',
         {"caption": "a red car", "regions": [{"id": 1, "label": "car"}, {"id": 2}]}),
        ('{"caption": "a red ca', {"caption": "a red ca"}),
        ('{"a": 1, "b": 12', {"a": 1}),
        ('{"a": 1, "b": tr', {"a": 1}),
        ('{"a": 1, "b": true', {"a": 1, "b": True}),
        ('{"a": 1, "b":', {"a": 1}),
        ('{"a": 1, "b": {"c": [', {"a": 1, "b": {"c": []}}),
        ('```json\n[{"id": 1}, {"id": 2,', [{"id": 1}, {"id": 2}]),
    ],
)
def test_parse_json_repairs_a_truncated_tail(text, expected):
    assert parse_json(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("I cannot help with that.", "no JSON object"),
        ("", "no JSON object"),
        ("{", "cut off before any value"),
        ('{"a": 1 2 zzz}', "unexpected 'zzz'"),
        ('{"a": <b>}', "unexpected '<'"),
        ('{"a" "b"}', "unrepairable JSON"),
    ],
)
def test_parse_json_gives_up_with_a_reason(text, reason):
    with pytest.raises(MalformedReply, match=reason):
        parse_json(text)
    assert issubclass(MalformedReply, ValueError)


def test_require():
    obj = {"caption": "a cat", "score": 1, "ok": True, "tags": ["x"]}
    assert require(obj, caption=str, score=float, ok=bool, tags=list) is obj
    with pytest.raises(ValueError, match="missing key 'boxes'"):
        require(obj, boxes=list)
    with pytest.raises(ValueError, match="key 'caption' should be list, got str"):
        require(obj, caption=list)
    with pytest.raises(ValueError, match="key 'ok' should be int"):
        require(obj, ok=int)
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        require([obj], caption=str)
    assert require({"v": None}, v=(str, type(None)))


class Scripted(ChatEngine):
    """Replies from a per-prompt queue; records every batch it was sent."""

    kind = "scripted"

    def __init__(self, script: dict[str, list[ChatReply]]) -> None:
        super().__init__("scripted")
        self.script = {prompt: list(replies) for prompt, replies in script.items()}
        self.batches: list[list[ChatRequest]] = []

    def generate(self, requests):
        self.batches.append(list(requests))
        return [self.script[r.prompt].pop(0) for r in requests]


def caption(obj):
    obj = require(obj, caption=str)
    if not obj["caption"].strip():
        raise ValueError("empty caption")
    return obj["caption"].strip()


def test_ask_resends_only_failures_and_gives_up_with_the_reason():
    good = ChatReply(text='{"caption": "a dog"}')
    engine = Scripted({
        "a": [good],
        "b": [ChatReply(text="Sorry, I can't."), good],
        "c": [ChatReply(text='{"caption": " "}')] * 3,
        "d": [ChatReply(error="HTTP 503 after 5 attempts: overloaded"), ChatReply(text='{"caption": "x", }')],
        "e": [ChatReply(text='{"caption": "a', truncated=True)],
        "f": [ChatReply(text='{"cap', truncated=True)] * 3,
    })
    requests = [ChatRequest(prompt=p) for p in "abcdef"]
    answers = ask(engine, requests, caption, max_attempts=3)
    assert [[r.prompt for r in batch] for batch in engine.batches] == [list("abcdef"), list("bcdf"), list("cf")]
    assert answers[0] == Answer("a dog", 1)
    assert answers[1] == Answer("a dog", 2)
    assert answers[2] == Answer(None, 3, "empty caption after 3 attempts")
    assert answers[3] == Answer("x", 2)
    assert answers[4] == Answer("a", 1, truncated=True)
    assert answers[5].error == "truncated reply: cut off before any value after 3 attempts"
    assert [a.ok for a in answers] == [True, True, False, True, True, False]


def test_ask_samples_hotter_only_after_a_bad_reply():
    engine = Scripted({
        "bad": [ChatReply(text="nope")] * 3,
        "down": [ChatReply(error="timed out")] * 3,
    })
    answers = ask(engine, [ChatRequest(prompt="bad"), ChatRequest(prompt="down")], caption, max_attempts=3)
    temps = [[(r.prompt, r.temperature) for r in batch] for batch in engine.batches]
    assert temps[1:] == [[("bad", 0.4), ("down", 0.0)], [("bad", 0.8), ("down", 0.0)]]
    assert answers[1].error == "timed out after 3 attempts"


def test_ask_on_nothing_sends_nothing():
    engine = Scripted({})
    assert ask(engine, [], caption) == [] and engine.batches == []


@pytest.mark.parametrize("shape", [(1, 300), (300, 1), (5, 5), (20, 4000), (2, 2)])
def test_thin_or_tiny_crops_are_padded_to_what_every_vlm_processor_accepts(shape):
    """Qwen2.5-VL's processor raises for an aspect ratio over 200 or a side under 28 pixels: every image a
    VLM is sent is padded (its own edge pixels, centred) into bounds; the original pixels stay in the middle."""
    from groundcap.vlm.chat import MAX_ASPECT, MIN_SIDE, to_image

    array = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    img = to_image(array)
    w, h = img.size
    assert min(w, h) >= MIN_SIDE and max(w, h) / min(w, h) <= MAX_ASPECT
    out = np.asarray(img)
    top, left = (h - shape[0]) // 2, (w - shape[1]) // 2
    assert (out[top:top + shape[0], left:left + shape[1]] == array).all()
    big = np.zeros((400, 600, 3), np.uint8)
    assert to_image(big).size == (600, 400) and to_image(big, 300).size == (300, 200)  # in bounds: untouched
