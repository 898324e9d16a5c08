"""Tagger "clip": zero-shot tags from CLIP's image-text similarity over a fixed vocabulary."""

from __future__ import annotations

import string

import numpy as np
from PIL import Image

from groundcap import prompts
from groundcap.annotators.base import Tag, Tagger, crop
from groundcap.annotators.registry import register
from groundcap.models import hub

CROP_PAD = 0.1  # a box crop keeps this much context each side: CLIP names tight crops worse


@register("tagger", "clip", needs=("torch", "transformers"), device="gpu",
          description="CLIP zero-shot tags over a vocabulary (transformers)")
class ClipTagger(Tagger):
    """The vocabulary labels CLIP finds most like the image, each in ``template``.

    Score: the label's softmax probability over the whole vocabulary (CLIP's scaled cosine
    similarities), so one image's scores sum to at most 1; the ``top_k`` labels scoring at least
    ``min_score`` become tags. The vocabulary's text embeddings are computed once, at construction.
    """

    defaults = {
        "model": "openai/clip-vit-large-patch14",
        "device": "auto",
        "dtype": "auto",
        "vocabulary": "",
        "template": "a photo of a $label.",
        "top_k": 10,
        "min_score": 0.05,
        "batch_size": 32,
    }
    data_files = ("prompts/vocabulary.txt",)
    loads_hub_model = True

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.labels = prompts.read_vocabulary(self.vocabulary)
        self.hf = hub.Loaded(self.model, "CLIPModel", "CLIPProcessor", "CLIPImageProcessorPil", self.device,
                                   self.dtype, tokenizer=True)
        self.text_embeddings = self._embed_text()

    def provenance(self) -> dict[str, str]:
        return {**super().provenance(), "prompt_hash": _prompt_hash(self.template, self.labels)}

    @classmethod
    def fingerprint(cls, options):
        labels = prompts.read_vocabulary(options.get("vocabulary", cls.defaults["vocabulary"]))
        return {**super().fingerprint(options),
                "prompt_hash": _prompt_hash(options.get("template", cls.defaults["template"]), labels)}

    def tag(self, image: np.ndarray) -> list[Tag]:
        return self._tag([image])[0]

    def tag_batch(self, images: list[np.ndarray]) -> list[list[Tag]]:
        return self._tag(images)

    def tag_crops(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]]) -> list[list[Tag]]:
        return self._tag([crop(image, box, CROP_PAD) for box in boxes])

    @hub.inference
    def _embed_text(self):
        import torch

        texts = [string.Template(self.template).substitute(label=label) for label in self.labels]
        parts = []
        for chunk in hub.batches(texts, self.batch_size):
            batch = self.hf.processor(text=list(chunk), padding=True, truncation=True, return_tensors="pt")
            parts.append(self.hf.model.get_text_features(**self.hf.inputs(batch)).pooler_output.float())
        return _unit(torch.cat(parts))

    @hub.inference
    def _tag(self, images: list[np.ndarray]) -> list[list[Tag]]:
        scale = self.hf.model.logit_scale.exp().float()
        tags: list[list[Tag]] = []
        for chunk in hub.batches(images, self.batch_size):
            batch = self.hf.processor(images=[Image.fromarray(im) for im in chunk], return_tensors="pt")
            features = _unit(self.hf.model.get_image_features(**self.hf.inputs(batch)).pooler_output.float())
            probs = (scale * features @ self.text_embeddings.T).softmax(dim=-1).cpu().numpy()
            tags += [self._top(p) for p in probs]
        return tags

    def _top(self, probs: np.ndarray) -> list[Tag]:
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        return [Tag(self.labels[i], float(probs[i]), "clip") for i in order if probs[i] >= self.min_score]


def _unit(features):
    return features / features.norm(dim=-1, keepdim=True)


def _prompt_hash(template: str, labels: list[str]) -> str:
    """One hash of the template and the vocabulary (a user's vocabulary file is read, not named)."""
    return prompts.combined_hash([prompts.Prompt("template", template),
                                  prompts.Prompt("vocabulary", "\n".join(labels))])
