"""The chat interface every VLM engine implements, and the engine factory.

A VLM backend (captioner, verifier, scene composer, tagger) names an engine and its options in
params; ``engine()`` builds it once per (kind, options) so several backends of one stage share a
loaded model instead of loading it twice onto the GPU (``groundcap.models``, which also frees it
when the stage ends).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from groundcap import models
from groundcap.errors import ParamsError


@dataclass(frozen=True)
class ChatRequest:
    """One user turn: text and images (HxWx3 uint8 RGB), optionally a system prompt."""

    prompt: str
    images: tuple[np.ndarray, ...] = ()
    system: str | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    json_mode: bool = False  # ask the server for a JSON object where it supports it
    # the JSON schema the reply must follow, where the engine decodes under constraints (vLLM's structured
    # outputs); engines without that treat it as json_mode, and vlm.structured validates the reply anyway
    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChatReply:
    """What came back: ``text`` or, when every attempt failed, ``error`` (never both None)."""

    text: str | None = None
    error: str | None = None
    truncated: bool = False  # generation stopped at max_tokens
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.text is not None


class ChatEngine(ABC):
    """A served or loaded VLM. ``generate`` never raises for one bad request: it returns its error."""

    kind: str = ""
    max_image_side: int = 0  # images are sent downscaled to this longer side (0: as they are)

    def __init__(self, model: str) -> None:
        self.model = model

    @abstractmethod
    def generate(self, requests: list[ChatRequest]) -> list[ChatReply]: ...

    def describe(self) -> str:
        """Model id and engine, for provenance."""
        return f"{self.model} ({self.kind})"


# What every VLM processor accepts: Qwen2.5-VL's refuses an aspect ratio over 200 and sides under its
# 28-pixel patch grid; a region's crop can be 1 x N pixels (a line, a pole), and a thin photo passes ingest.
MIN_SIDE, MAX_ASPECT = 28, 100


def downscale(array: np.ndarray, max_side: int = 0) -> np.ndarray:
    """``array`` resized (bicubic) so its longer side is at most ``max_side``; itself when it already is (or 0)."""
    h, w = array.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return array
    scale = max_side / max(h, w)
    img = Image.fromarray(np.ascontiguousarray(array))
    return np.asarray(img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC))


def to_image(array: np.ndarray, max_side: int = 0) -> Image.Image:
    """A PIL image of ``array``, downscaled so its longer side is at most ``max_side`` (0: keep), then padded
    (edge pixels repeated, centred) to at least ``MIN_SIDE`` a side and at most ``MAX_ASPECT`` long to short."""
    img = Image.fromarray(np.ascontiguousarray(downscale(array, max_side)))
    w, h = img.size
    need_w, need_h = max(w, MIN_SIDE, -(-h // MAX_ASPECT)), max(h, MIN_SIDE, -(-w // MAX_ASPECT))
    if (need_w, need_h) == (w, h):
        return img
    pad = ((need_h - h) // 2, need_h - h - (need_h - h) // 2), ((need_w - w) // 2, need_w - w - (need_w - w) // 2)
    return Image.fromarray(np.pad(np.asarray(img), (*pad, (0, 0)), mode="edge"))


def data_url(array: np.ndarray, fmt: str = "jpeg", max_side: int = 0) -> str:
    """The image as a ``data:image/...;base64,`` URL, the form chat-completions servers accept."""
    buf = io.BytesIO()
    to_image(array, max_side).save(buf, format="JPEG" if fmt == "jpeg" else "PNG", quality=92)
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode()}"


def openai_messages(req: ChatRequest, fmt: str = "jpeg", max_side: int = 0) -> list[dict[str, Any]]:
    """The request as OpenAI chat messages (images first, then the text), as vLLM and servers take them."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": data_url(img, fmt, max_side)}} for img in req.images
    ]
    content.append({"type": "text", "text": req.prompt})
    messages: list[dict[str, Any]] = [{"role": "system", "content": req.system}] if req.system else []
    messages.append({"role": "user", "content": content})
    return messages


def brief(text: str, limit: int = 300) -> str:
    """``text`` on one line and at most ``limit`` characters, for error messages that end up in rows."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


ENGINES: dict[str, str] = {
    "vllm": "groundcap.vlm.vllm_offline:VllmChat",
    "openai": "groundcap.vlm.openai_api:OpenAIChat",
    "transformers": "groundcap.vlm.hf_generate:TransformersChat",
}


def engine_key(kind: str, model: str, options: dict[str, Any] | None = None) -> tuple[str, str]:
    """The ``groundcap.models`` key of an engine: equal for equal kind, model and options."""
    return ("vlm", json.dumps([kind, model, options or {}], sort_keys=True, default=str))


def engine(kind: str, model: str, options: dict[str, Any] | None = None) -> ChatEngine:
    """The engine ``kind`` serving ``model``, built once per process for the same options."""
    if kind not in ENGINES:
        raise ParamsError(f"unknown VLM engine {kind!r}; engines: {', '.join(ENGINES)}")

    def build() -> ChatEngine:
        module_name, cls_name = ENGINES[kind].split(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        return cls(model=model, **(options or {}))

    return models.cached(engine_key(kind, model, options), build)
