"""PromptedSegmenter "grabcut": OpenCV GrabCut initialised with each detection's box."""

from __future__ import annotations

import cv2
import numpy as np

from groundcap import masks
from groundcap.annotators.base import Detection, Mask, PromptedSegmenter
from groundcap.annotators.registry import register


def context_window(box, width: int, height: int, context: float) -> tuple[int, int, int, int]:
    """The box grown by ``context`` x its size on every side, clipped: [x0, y0, x1, y1) in pixels."""
    x, y, w, h = box
    return (
        max(0, int(np.floor(x - context * w))),
        max(0, int(np.floor(y - context * h))),
        min(width, int(np.ceil(x + w + context * w))),
        min(height, int(np.ceil(y + h + context * h))),
    )


@register("prompted_segmenter", "grabcut", needs=("cv2",), description="GrabCut from each detection box (OpenCV)")
class GrabCutSegmenter(PromptedSegmenter):
    """GrabCut on a window around each box, the window's longest side at most ``work_side``.

    The window is the box plus ``context`` x its size on each side, not the whole image: the
    background colour model then comes from the object's surroundings, and a small box keeps its
    detail instead of shrinking to a few pixels (a huge ``context`` gives whole-image GrabCut).
    The mask is scaled back with nearest neighbour. ``cv2.setRNGSeed`` before each call makes the
    GMM initialisation, hence the mask, deterministic.

    GrabCut finds no foreground when the box leaves it no background to learn from (a text line
    spanning the page, say); with ``box_fallback`` the detection then keeps its box as its mask,
    marked ``source="box"``, instead of vanishing.
    """

    model = "opencv grabCut"

    defaults = {"work_side": 512, "iterations": 3, "context": 0.5, "seed": 0, "box_fallback": True}

    def segment(self, image: np.ndarray, detections: list[Detection]) -> list[Mask | None]:
        return [self._one(image, d) or (self._box(image, d) if self.box_fallback else None) for d in detections]

    @staticmethod
    def _box(image: np.ndarray, det: Detection) -> Mask | None:
        height, width = image.shape[:2]
        x, y, w, h = det.bbox
        x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
        x1, y1 = min(int(np.ceil(x + w)), width), min(int(np.ceil(y + h)), height)
        if x1 <= x0 or y1 <= y0:
            return None
        full = np.zeros((height, width), dtype=bool)
        full[y0:y1, x0:x1] = True
        return Mask(masks.encode(full), det.label, det.score, "box", "object", det.text)

    def _one(self, image: np.ndarray, det: Detection) -> Mask | None:
        height, width = image.shape[:2]
        x0, y0, x1, y1 = context_window(det.bbox, width, height, self.context)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        scale = min(1.0, self.work_side / max(x1 - x0, y1 - y0))
        ww, wh = max(2, round((x1 - x0) * scale)), max(2, round((y1 - y0) * scale))
        crop = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])  # GrabCut models BGR, order is irrelevant
        if scale < 1.0:
            crop = cv2.resize(crop, (ww, wh), interpolation=cv2.INTER_AREA)
        sx, sy = ww / (x1 - x0), wh / (y1 - y0)
        bx, by, bw, bh = det.bbox
        rx0 = min(max(int(round((bx - x0) * sx)), 0), ww - 2)
        ry0 = min(max(int(round((by - y0) * sy)), 0), wh - 2)
        rx1 = min(max(int(round((bx + bw - x0) * sx)), rx0 + 1), ww)
        ry1 = min(max(int(round((by + bh - y0) * sy)), ry0 + 1), wh)
        if rx0 == 0 and ry0 == 0 and rx1 == ww and ry1 == wh:
            rx0, ry0, rx1, ry1 = 1, 1, ww - 1, wh - 1  # GrabCut needs some background outside the rect
        if rx1 - rx0 < 1 or ry1 - ry0 < 1:
            return None
        gc = np.zeros((wh, ww), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)
        cv2.grabCut(crop, gc, (rx0, ry0, rx1 - rx0, ry1 - ry0), bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
        if not fg.any():
            return None
        if scale < 1.0:
            fg = cv2.resize(fg, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        full = np.zeros((height, width), dtype=bool)
        full[y0:y1, x0:x1] = fg.astype(bool)
        return Mask(masks.encode(full), det.label, det.score, "grabcut", "object", det.text)
