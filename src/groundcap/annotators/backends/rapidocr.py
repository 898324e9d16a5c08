"""Detector "rapidocr": text lines and what they say, from RapidOCR's bundled ONNX models."""

from __future__ import annotations

import numpy as np

from groundcap.annotators.base import Detection, Detector, Tag, at_work_side
from groundcap.annotators.registry import register


@register("detector", "rapidocr", needs=("rapidocr_onnxruntime",),
          description="RapidOCR text lines (PP-OCR ONNX models)")
class RapidOcrDetector(Detector):
    """Each text line RapidOCR reads with score >= ``min_score`` becomes a "text" detection; lines
    without a letter or digit (a lone symbol such as "★" read off a logo) are dropped.

    Images longer than ``max_side`` are downscaled first (detection cost grows with pixels, and
    RapidOCR would shrink them anyway); boxes are the axis-aligned hull of the line's polygon,
    scaled back to full resolution.
    """

    model = "rapidocr-onnxruntime PP-OCRv4"
    defaults = {"min_score": 0.6, "max_side": 2000}
    _engine = None

    @property
    def engine(self):
        if self._engine is None:  # loading three ONNX sessions takes ~0.4 s: once per instance
            from rapidocr_onnxruntime import RapidOCR

            self._engine = RapidOCR()
        return self._engine

    def detect(self, image: np.ndarray, tags: list[Tag]) -> list[Detection]:
        h, w = image.shape[:2]
        work, scale = at_work_side(image, self.max_side)
        result, _ = self.engine(np.ascontiguousarray(work[:, :, ::-1]))  # RapidOCR takes arrays as BGR
        dets = []
        for polygon, text, score in result or []:
            text = str(text).strip()
            if not any(ch.isalnum() for ch in text) or float(score) < self.min_score:
                continue
            pts = np.asarray(polygon, dtype=np.float64) / scale
            x0, y0 = max(0.0, pts[:, 0].min()), max(0.0, pts[:, 1].min())
            x1, y1 = min(float(w), pts[:, 0].max()), min(float(h), pts[:, 1].max())
            if x1 > x0 and y1 > y0:
                box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
                dets.append(Detection("text", float(score), box, "rapidocr", text))
        return sorted(dets, key=lambda d: (d.bbox[1], d.bbox[0], -d.score))
