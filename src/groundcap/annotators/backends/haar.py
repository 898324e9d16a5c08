"""Detector "haar": the Haar cascades that ship inside OpenCV (faces, cat faces, bodies, plates)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from groundcap.annotators.base import Detection, Detector, Tag, at_work_side
from groundcap.annotators.registry import register
from groundcap.errors import BackendUnavailable, ParamsError

# cascade file stem (haarcascade_<name>.xml) -> the label its detections get
LABELS = {
    "frontalface_default": "face",
    "frontalface_alt": "face",
    "frontalface_alt2": "face",
    "frontalface_alt_tree": "face",
    "profileface": "face",
    "frontalcatface": "cat face",
    "frontalcatface_extended": "cat face",
    "fullbody": "person",
    "upperbody": "upper body",
    "lowerbody": "lower body",
    "russian_plate_number": "license plate",
    "license_plate_rus_16stages": "license plate",
}


def box_overlap(a, b) -> float:
    """Intersection over the smaller box: catches a box nested inside another, which IoU misses."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    smaller = min(a[2] * a[3], b[2] * b[3])
    return ix * iy / smaller if smaller > 0 else 0.0


def keep_best(dets: list[Detection], max_overlap: float) -> list[Detection]:
    """Greedy per-label suppression: of overlapping same-label boxes keep the highest score."""
    order = sorted(dets, key=lambda d: (-d.score, d.bbox))
    kept: list[Detection] = []
    for d in order:
        if all(k.label != d.label or box_overlap(k.bbox, d.bbox) <= max_overlap for k in kept):
            kept.append(d)
    return kept


@register("detector", "haar", needs=("cv2",),
          description="OpenCV's bundled Haar cascades (faces, cat faces, bodies, plates)")
class HaarDetector(Detector):
    """Haar cascades on a histogram-equalized grayscale copy at most ``work_side`` pixels long.

    Score: the logistic of the cascade's final-stage boosted sum (``levelWeights`` of
    ``detectMultiScale3``), a deterministic monotone proxy of confidence, not a probability.
    """

    model = "opencv haarcascades"
    defaults = {
        "cascades": ["frontalface_default"],
        "min_neighbors": 6,
        "min_size_frac": 0.06,
        "scale_factor": 1.1,
        "work_side": 1024,
        "max_overlap": 0.5,
    }

    def __init__(self, **options):
        super().__init__(**options)
        unknown = [n for n in self.cascades if n not in LABELS]
        if unknown:
            raise ParamsError(f"unknown Haar cascade(s) {unknown}; known: {', '.join(sorted(LABELS))}")
        self.classifiers = {}
        for name in self.cascades:
            path = cv2.data.haarcascades + f"haarcascade_{name}.xml"
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise BackendUnavailable(f"OpenCV could not load {path} (opencv-python<5 ships the cascades)")
            self.classifiers[name] = cascade

    def detect(self, image: np.ndarray, tags: list[Tag]) -> list[Detection]:
        h, w = image.shape[:2]
        gray, scale = at_work_side(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), self.work_side)
        gray = cv2.equalizeHist(gray)
        side = max(1, round(self.min_size_frac * min(gray.shape)))
        dets: list[Detection] = []
        for name, cascade in self.classifiers.items():
            boxes, _, weights = cascade.detectMultiScale3(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(side, side), outputRejectLevels=True,
            )
            boxes, weights = np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)
            for (x, y, bw, bh), weight in zip(boxes, weights, strict=True):
                box = (x / scale, y / scale, bw / scale, bh / scale)
                x0, y0 = max(0.0, box[0]), max(0.0, box[1])
                box = (x0, y0, min(box[2], w - x0), min(box[3], h - y0))
                score = 1.0 / (1.0 + math.exp(-float(weight)))
                dets.append(Detection(LABELS[name], score, tuple(float(v) for v in box), "haar"))
        return keep_best(dets, self.max_overlap)
