"""Segment Anything through transformers: box-prompted masks ("sam", "sam2") and "sam_everything".

The image is encoded once per call and its embedding reused by every chunk of prompts. Masks are
judged (stability, area, NMS) at ``work_side``: SAM's decoder predicts 256x256 logits whatever the
image size, so upscaling all of them to a 24-megapixel photo costs memory and time for nothing. A
mask that is kept is upscaled again from those logits straight to full size, so its edges are as
sharp as at ``work_side`` 0 (judge at full resolution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from groundcap import masks
from groundcap.annotators.base import Backend, Detection, Mask, MaskGenerator, PromptedSegmenter
from groundcap.annotators.registry import register
from groundcap.models import hub


def stability_score(logits, offset: float):
    """SAM's stability: IoU of the mask thresholded at +offset and at -offset, per mask.

    The first mask lies inside the second, so the IoU is the ratio of their areas; near 1 when the
    mask hardly moves with the threshold. 0 where even the looser mask is empty.
    """
    inner = (logits > offset).flatten(-2).sum(-1)
    outer = (logits > -offset).flatten(-2).sum(-1)
    return inner / outer.clamp(min=1)


def point_grid(per_side: int, height: int, width: int) -> np.ndarray:
    """SAM's point prompts: the centres of a ``per_side`` x ``per_side`` grid of cells, [x, y] in pixels."""
    centres = (np.arange(per_side) + 0.5) / per_side
    xs, ys = np.meshgrid(centres * width, centres * height)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


class SamBackend(Backend):
    """What the SAM backends share: the model, one image embedding per call, mask logits at a size."""

    loads_hub_model = True
    classes: ClassVar[tuple[str, str, str]] = ("SamModel", "SamProcessor", "SamImageProcessorPil")
    shared: ClassVar[dict[str, Any]] = {"device": "auto", "dtype": "auto", "work_side": 0, "stability_offset": 1.0}

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.hf = hub.Loaded(self.model, *self.classes, self.device, self.dtype)

    def _encode(self, image: np.ndarray, **prompts) -> tuple[dict, Any]:
        """The processor's output (prompts scaled to the model's input) and the image embedding."""
        inputs = self.hf.inputs(self.hf.processor(images=Image.fromarray(image), return_tensors="pt", **prompts))
        return inputs, self.hf.model.get_image_embeddings(inputs.pop("pixel_values"))

    def _decode(self, inputs: dict, embeddings, chunk: slice, multimask: bool):
        """Low-resolution mask logits [prompts, masks, h, w] and predicted IoUs [prompts, masks]."""
        prompts = {k: inputs[k][:, chunk] for k in ("input_boxes", "input_points", "input_labels") if k in inputs}
        out = self.hf.model(image_embeddings=embeddings, multimask_output=multimask, **prompts)
        return out.pred_masks[0].float(), out.iou_scores[0].float()

    def _upscale(self, low_res, inputs: dict, size: tuple[int, int]):
        """Logits [..., h, w] resized to ``size`` the processor's way (SAM crops its padding first)."""
        extra = {k: inputs[k] for k in ("reshaped_input_sizes",) if k in inputs}  # SAM 2 does not pad
        return self.hf.processor.post_process_masks([low_res], original_sizes=[size], binarize=False, **extra)[0]

    def _full(self, low_res, inputs: dict, size: tuple[int, int]) -> np.ndarray:
        """One mask, binary, at full size, from its [h, w] low-resolution logits."""
        return (self._upscale(low_res[None, None], inputs, size)[0, 0] > 0).cpu().numpy()

    def _work_size(self, height: int, width: int) -> tuple[int, int]:
        scale = min(1.0, self.work_side / max(height, width)) if self.work_side > 0 else 1.0
        return max(1, round(height * scale)), max(1, round(width * scale))


@register("prompted_segmenter", "sam", needs=("torch", "transformers"), device="gpu",
          description="SAM masks from each detection box (transformers)")
class SamSegmenter(SamBackend, PromptedSegmenter):
    """One SAM mask per detection box, single-mask output, all boxes of an image in ``box_batch`` chunks.

    ``predicted_iou`` is SAM's own quality estimate, ``stability_score`` the mask's stability
    (``stability_score``) at ``work_side``; the detection keeps its label, score and text.
    """

    defaults = {**SamBackend.shared, "model": "facebook/sam-vit-huge", "box_batch": 64}

    @hub.inference
    def segment(self, image: np.ndarray, detections: list[Detection]) -> list[Mask | None]:
        if not detections:
            return []
        full = image.shape[:2]
        work = self._work_size(*full)
        boxes = [[list(hub.xywh_to_xyxy(d.bbox)) for d in detections]]
        inputs, embeddings = self._encode(image, input_boxes=boxes)
        out: list[Mask | None] = []
        for start in range(0, len(detections), self.box_batch):
            chunk = slice(start, start + self.box_batch)
            low_res, ious = self._decode(inputs, embeddings, chunk, multimask=False)
            logits = self._upscale(low_res, inputs, work)[:, 0]
            stability = stability_score(logits, self.stability_offset).tolist()
            for i, det in enumerate(detections[chunk]):
                binary = (logits[i] > 0).cpu().numpy() if work == full else self._full(low_res[i, 0], inputs, full)
                out.append(Mask(masks.encode(binary), det.label, det.score, self.name, "object", det.text,
                                float(ious[i, 0]), stability[i]) if binary.any() else None)
        return out


@register("prompted_segmenter", "sam2", needs=("torch", "transformers", "torchvision"), device="gpu",
          description="SAM 2 masks from each detection box (transformers; its processor needs torchvision)")
class Sam2Segmenter(SamSegmenter):
    """SAM 2 on the same path as "sam": only the classes differ (SAM 2 has no PIL image processor)."""

    classes = ("Sam2Model", "Sam2Processor", "Sam2ImageProcessor")
    defaults = {**SamSegmenter.defaults, "model": "facebook/sam2.1-hiera-large"}


@dataclass
class _Candidate:
    rle: masks.Rle  # at the working size
    low_res: Any  # [h, w] logits, to upscale to full size once kept (a copy: a view would pin its whole chunk)
    iou: float
    stability: float
    granularity: str


@register("mask_generator", "sam_everything", needs=("torch", "transformers"), device="gpu",
          description="SAM automatic masks from a grid of point prompts (transformers)")
class SamEverything(SamBackend, MaskGenerator):
    """SAM's automatic mask generator, single crop: a ``points_per_side`` grid, three masks per point.

    A mask stays if SAM's predicted IoU is at least ``pred_iou_thresh``, its stability at least
    ``stability_score_thresh`` and its area at least ``min_area_frac`` of the image; then mask NMS
    (``nms_iou``, best predicted IoU first) in RLE space. Granularity: SAM's three masks for a point
    are nested readings of it (whole, part, subpart), so of the ones kept for a point the largest is
    "object" and the smaller ones "part". Labels are empty: the pipeline names regions later.
    """

    defaults = {
        **SamBackend.shared,
        "model": "facebook/sam-vit-huge",
        "points_per_side": 32,
        "points_per_batch": 64,
        "pred_iou_thresh": 0.88,
        "stability_score_thresh": 0.92,
        "nms_iou": 0.7,
        "min_area_frac": 0.0005,
    }

    @hub.inference
    def generate(self, image: np.ndarray) -> list[Mask]:
        full = image.shape[:2]
        work = self._work_size(*full)
        points = point_grid(self.points_per_side, *full).tolist()
        inputs, embeddings = self._encode(image, input_points=[[[p] for p in points]],
                                          input_labels=[[[1] for _ in points]])
        candidates: list[_Candidate] = []
        for start in range(0, len(points), self.points_per_batch):
            low_res, ious = self._decode(inputs, embeddings, slice(start, start + self.points_per_batch), True)
            candidates += self._candidates(self._upscale(low_res, inputs, work), low_res, ious, work)
        kept = masks.nms([c.rle for c in candidates], [c.iou for c in candidates], self.nms_iou)
        return [
            Mask(c.rle if work == full else masks.encode(self._full(c.low_res, inputs, full)), "", c.iou, self.name,
                 c.granularity, None, c.iou, c.stability)
            for c in (candidates[i] for i in kept)
        ]

    def _candidates(self, logits, low_res, ious, work: tuple[int, int]) -> list[_Candidate]:
        """The masks of one chunk of points that pass the thresholds, with their granularity."""
        stability = stability_score(logits, self.stability_offset)
        areas = (logits > 0).flatten(-2).sum(-1)
        min_area = max(1.0, self.min_area_frac * work[0] * work[1])
        keep = (ious >= self.pred_iou_thresh) & (stability >= self.stability_score_thresh) & (areas >= min_area)
        out = []
        for p, row in enumerate(keep.tolist()):
            kept = [j for j, ok in enumerate(row) if ok]
            largest = max(kept, key=lambda j: int(areas[p, j]), default=None)
            out += [
                _Candidate(masks.encode((logits[p, j] > 0).cpu().numpy()), low_res[p, j].clone(), float(ious[p, j]),
                           float(stability[p, j]), "object" if j == largest else "part")
                for j in kept
            ]
        return out
