"""Detectors "grounding_dino" and "owlv2": zero-shot boxes prompted with the image's tag labels."""

from __future__ import annotations

import string
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from groundcap import prompts
from groundcap.annotators.base import Detection, Detector, Tag
from groundcap.annotators.detections import nms_per_label
from groundcap.annotators.registry import register
from groundcap.models import hub

NMS_IOU = 0.5  # same-label boxes overlapping this much are one object: the higher score stays

Prediction = tuple[str, float, list[float]]  # label, score, [x0, y0, x1, y1] in image pixels


class PromptedDetector(Detector):
    """Chunks the tag labels into prompts, clips the boxes to the image, suppresses per label.

    Subclasses name their transformers classes and turn one chunk of labels into predictions.
    """

    classes: ClassVar[tuple[str, str, str]]  # model, processor and PIL image processor, in transformers
    gpu_dtype: ClassVar[str] = "bfloat16"  # what dtype "auto" means on a GPU
    loads_hub_model = True
    shared: ClassVar[dict] = {"device": "auto", "dtype": "auto", "max_detections": 100}

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.hf = hub.Loaded(self.model, *self.classes, self.device, self.dtype, tokenizer=True,
                                   gpu_dtype=self.gpu_dtype)

    def provenance(self) -> dict[str, str]:
        return {**super().provenance(), "prompt_hash": prompts.Prompt("template", self.template).hash}

    @hub.inference
    def detect(self, image: np.ndarray, tags: list[Tag]) -> list[Detection]:
        labels = list(dict.fromkeys(t.label for t in tags))
        height, width = image.shape[:2]
        pil = Image.fromarray(image)
        detections = []
        for chunk in self._chunks(labels):
            for label, score, (x0, y0, x1, y1) in self._predict(pil, chunk):
                x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
                y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
                if x1 > x0 and y1 > y0:
                    detections.append(Detection(label, score, hub.xyxy_to_xywh((x0, y0, x1, y1)), self.name))
        return nms_per_label(detections, NMS_IOU)[: self.max_detections]

    def query(self, label: str) -> str:
        """The label in ``template``, lower case (Grounding DINO was trained on lower-case text)."""
        return string.Template(self.template).substitute(label=label).lower()

    def _chunks(self, labels: list[str]) -> Iterator[list[str]]:
        """Consecutive labels, at most ``max_labels_per_call`` whose prompt ``_fits`` a call."""
        chunk: list[str] = []
        for label in labels:
            if chunk and (len(chunk) == self.max_labels_per_call or not self._fits(chunk + [label])):
                yield chunk
                chunk = []
            chunk.append(label)
        if chunk:
            yield chunk

    def _fits(self, labels: list[str]) -> bool:
        """Whether one call reads the whole prompt for ``labels`` (no limit but the count, by default)."""
        return True

    def _forward(self, batch: Mapping[str, Any]) -> Any:
        """The model's outputs, boxes and logits in float32: the processors post-process in the outputs' dtype,
        and in bfloat16 box corners and pixel edges round to 8 bits (an edge past 2,048 px moved by 16)."""
        outputs = self.hf.model(**self.hf.inputs(batch))
        outputs.pred_boxes, outputs.logits = outputs.pred_boxes.float(), outputs.logits.float()
        return outputs

    @abstractmethod
    def _predict(self, image: Image.Image, labels: list[str]) -> Iterable[Prediction]: ...


@register("detector", "grounding_dino", needs=("torch", "transformers"), device="gpu",
          description="Grounding DINO zero-shot boxes for the tag labels (transformers)")
class GroundingDino(PromptedDetector):
    """Grounding DINO prompted with ``"label one. label two."``.

    Its text encoder reads at most ``max_text_len`` (256) tokens and silently drops the rest, so a
    chunk also stops before its prompt would not fit. A box's label is the phrase whose tokens score
    above ``text_threshold``, mapped back to the tag it came from; a phrase that is no tag (it spans
    two labels, or part of one) keeps its own text, and a box with no phrase is dropped.
    """
    # float32 unless asked: in half precision its deformable attention fed grid_sample a float32 grid
    # against float16 values and crashed, on transformers releases before the fix (transformers PR #48438)
    gpu_dtype = "float32"

    classes = ("GroundingDinoForObjectDetection", "GroundingDinoProcessor", "GroundingDinoImageProcessorPil")
    defaults = {
        **PromptedDetector.shared,
        "model": "IDEA-Research/grounding-dino-base",
        "template": "$label",
        "box_threshold": 0.3,
        "text_threshold": 0.25,
        "max_labels_per_call": 32,
    }

    def _prompt(self, labels: list[str]) -> str:
        return " ".join(f"{' '.join(self.query(label).replace('.', ' ').split())}." for label in labels)

    def _fits(self, labels: list[str]) -> bool:
        return len(self.hf.processor.tokenizer(self._prompt(labels))["input_ids"]) <= self.hf.model.config.max_text_len

    def _phrase(self, text: str) -> str:
        """Decoded tokens without special tokens and separators, so prompt and output compare equal."""
        special = set(self.hf.processor.tokenizer.all_special_tokens)
        return " ".join(word for word in text.replace(".", " ").split() if word not in special)

    def _predict(self, image: Image.Image, labels: list[str]) -> Iterable[Prediction]:
        tokenizer = self.hf.processor.tokenizer
        by_phrase = {}
        for label in labels:
            ids = tokenizer(self._prompt([label]), add_special_tokens=False)["input_ids"]
            by_phrase.setdefault(self._phrase(tokenizer.decode(ids)), label)
        batch = self.hf.processor(images=image, text=self._prompt(labels), return_tensors="pt")
        (result,) = self.hf.processor.post_process_grounded_object_detection(
            self._forward(batch), batch["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[(image.height, image.width)],
        )
        for text, score, box in zip(result["text_labels"], result["scores"].tolist(), result["boxes"].tolist(),
                                    strict=True):
            if phrase := self._phrase(text):
                yield by_phrase.get(phrase, phrase), score, box


@register("detector", "owlv2", needs=("torch", "transformers"), device="gpu",
          description="OWLv2 zero-shot boxes for the tag labels (transformers)")
class Owlv2(PromptedDetector):
    """OWLv2 with one text query per label; each box gets its best-scoring query's label."""

    classes = ("Owlv2ForObjectDetection", "Owlv2Processor", "Owlv2ImageProcessorPil")
    defaults = {
        **PromptedDetector.shared,
        "model": "google/owlv2-base-patch16-ensemble",
        "template": "a photo of a $label",
        "box_threshold": 0.2,
        "max_labels_per_call": 64,
    }

    def _predict(self, image: Image.Image, labels: list[str]) -> Iterable[Prediction]:
        # the processor pads each query to the text encoder's length but truncates none unless asked: one longer
        # query made the batch ragged (a ValueError); cut, it keeps what the encoder can read
        batch = self.hf.processor(images=image, text=[[self.query(label) for label in labels]], truncation=True,
                                  return_tensors="pt")
        (result,) = self.hf.processor.post_process_grounded_object_detection(
            self._forward(batch), threshold=self.box_threshold, target_sizes=[(image.height, image.width)]
        )
        for index, score, box in zip(result["labels"].tolist(), result["scores"].tolist(), result["boxes"].tolist(),
                                     strict=True):
            yield labels[index], score, box
