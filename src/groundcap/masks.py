"""COCO RLE masks: the one place that talks to pycocotools.

Every mask in groundcap lives as a COCO RLE dict ``{"size": [h, w], "counts": str}``. Post-processing
(IoU, union, difference, NMS) happens in RLE space, which is orders of magnitude cheaper than dense
arrays on large images (DESIGN.md, "Annotators").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as _coco

Rle = dict  # {"size": [h, w], "counts": str}


def _to_coco(rle: Rle) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _from_coco(rle: dict) -> Rle:
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def encode(mask: np.ndarray) -> Rle:
    """Encode one HxW boolean/0-1 mask (pycocotools wants Fortran-ordered uint8 HxWxN)."""
    if mask.ndim != 2:
        raise ValueError(f"encode expects a 2-D mask, got shape {mask.shape}")
    arr = np.asfortranarray(mask.astype(np.uint8, copy=False)[:, :, None])
    return _from_coco(_coco.encode(arr)[0])


def decode(rle: Rle) -> np.ndarray:
    """Decode to an HxW bool array."""
    return _coco.decode(_to_coco(rle)).astype(bool)


def area(rle: Rle) -> int:
    return int(_coco.area(_to_coco(rle)))


def bbox(rle: Rle) -> list[float]:
    """[x, y, w, h] of the mask's pixels, as COCO computes it."""
    return [float(v) for v in _coco.toBbox(_to_coco(rle))]


def iou(a: Sequence[Rle], b: Sequence[Rle]) -> np.ndarray:
    """Pairwise IoU matrix len(a) x len(b)."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    return np.asarray(_coco.iou([_to_coco(r) for r in a], [_to_coco(r) for r in b], [0] * len(b)))


def union(rles: Sequence[Rle]) -> Rle:
    return _from_coco(_coco.merge([_to_coco(r) for r in rles], intersect=False))


def intersection(a: Rle, b: Rle) -> Rle:
    return _from_coco(_coco.merge([_to_coco(a), _to_coco(b)], intersect=True))


def subtract(a: Rle, b: Rle) -> Rle:
    """Pixels of ``a`` not in ``b``.

    pycocotools has no difference operator, so the overlap is tested in RLE space and only masks
    that really overlap are decoded.
    """
    inter = _coco.merge([_to_coco(a), _to_coco(b)], intersect=True)
    if _coco.area(inter) == 0:
        return a
    return encode(decode(a) & ~_coco.decode(inter).astype(bool))


def empty(h: int, w: int) -> Rle:
    return encode(np.zeros((h, w), dtype=bool))


def containment(a: Rle, b: Rle) -> float:
    """Fraction of ``a``'s pixels that lie inside ``b``."""
    a_area = area(a)
    return area(intersection(a, b)) / a_area if a_area else 0.0


def nms(rles: Sequence[Rle], scores: Sequence[float], iou_threshold: float) -> list[int]:
    """Greedy mask NMS; returns kept indices, best score first (ties broken by index)."""
    order = sorted(range(len(rles)), key=lambda i: (-scores[i], i))
    if not order:
        return []
    ious = iou(rles, rles)
    kept: list[int] = []
    for i in order:
        if all(ious[i, j] <= iou_threshold for j in kept):
            kept.append(i)
    return kept
