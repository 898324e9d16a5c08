"""Tagger "vlm": open-vocabulary tags from a VLM (DenseWorld's open-vocabulary tagger, PancapEngine's per-crop
tags): every thing and stuff the model sees, named in its own words rather than picked from a vocabulary.

Given the captioner's model and engine options it runs on the captioner's engine (``groundcap.models`` keys
engines by them), so the GPU profile loads one VLM for tags, crop tags and captions (docs/gpu.md).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from groundcap.annotators.backends.vlm import VLM_OPTIONS, VlmBackend
from groundcap.annotators.base import Tag, Tagger, crop
from groundcap.annotators.registry import register
from groundcap.vlm import structured

TAGS_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["tags"],
    "properties": {"tags": {"type": "array", "items": {"type": "string", "minLength": 1}}},
}
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")


@register("tagger", "vlm", device="gpu",
          description="VLM open-vocabulary tags: every thing and stuff it sees, in the image and in region crops")
class VlmTagger(VlmBackend, Tagger):
    """Tags in the order the model lists them (the most prominent, or what fills a crop, first).

    Score: ``1 / (1 + rank)`` in that list, the model's order and not a probability (1.0 for the first, 0.5
    for the second, ...); at most ``top_k`` names of at most ``max_words`` words each. One engine call per
    batch: every image of ``tag_batch``, every crop of ``tag_crops_batch``. A reply that names nothing is an
    empty list (the model saw nothing to name); one that never parses fails the batch with its reason.
    """

    defaults = {**VLM_OPTIONS, "max_tokens": 256, "top_k": 20, "max_words": 4, "crop_pad": 0.1}
    prompt_names = ("tag_image", "tag_crop")

    def tag(self, image: np.ndarray) -> list[Tag]:
        return self.tag_batch([image])[0]

    def tag_batch(self, images: list[np.ndarray]) -> list[list[Tag]]:
        return self._tags("tag_image", images)

    def tag_crops(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[list[Tag]]:
        return self.tag_crops_batch([(image, boxes)])[0]

    def tag_crops_batch(self, items):
        tags = iter(self._tags("tag_crop", [crop(image, box, self.crop_pad) for image, boxes in items
                                            for box in boxes]))
        return [[next(tags) for _ in boxes] for _, boxes in items]

    def _tags(self, prompt: str, images: list[np.ndarray]) -> list[list[Tag]]:
        text = self.prompts[prompt].render()
        answers = self.ask([self.request(text, image, schema=TAGS_SCHEMA) for image in images], self.names)
        failed = [f"{prompt} #{i}: {a.error}" for i, a in enumerate(answers) if not a.ok]
        if failed:
            raise RuntimeError(f"vlm tagger got no tags ({'; '.join(failed)})")
        return [[Tag(name, round(1 / (1 + rank), 4), self.name) for rank, name in enumerate(a.value)]
                for a in answers]

    def names(self, obj: Any) -> list[str]:
        """A validator: ``{"tags": [...]}`` -> the names, casefolded, without a leading article, each once,
        at most ``top_k``; blank ones skipped; a name longer than ``max_words`` words is refused (re-asked)."""
        structured.require(obj, tags=list)
        out: dict[str, None] = {}
        for item in obj["tags"]:
            if not isinstance(item, str):
                raise ValueError(f"tag {item!r} is not a string")
            name = _ARTICLE.sub("", " ".join(item.casefold().split()))
            if len(name.split()) > self.max_words:
                raise ValueError(f"tag {item[:60]!r} is not a name of at most {self.max_words} words")
            if name:
                out[name] = None
        return list(out)[: self.top_k]
