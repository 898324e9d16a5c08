"""COCO RLE masks: the one place that talks to pycocotools.

Every mask in groundcap lives as a COCO RLE dict ``{"size": [h, w], "counts": str}``. Post-processing
(IoU, union, difference, NMS) happens in RLE space, which is orders of magnitude cheaper than dense
arrays on large images (docs/ARCHITECTURE.md, "Annotators and backends").
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


MAX_SIDE = 65535  # JPEG's own limit; h * w then fits pycocotools' 32-bit run lengths
MAX_OUTLINE = 2**22  # pixels of polygon outline per annotation, a 1000-sided 2000 px polygon 500 times over
_COUNT_CHARS = 7  # 35 bits: the longest count pycocotools writes for h * w < 2**32


def from_segmentation(segmentation, height: int, width: int) -> Rle:
    """A COCO annotation's ``segmentation`` as compressed RLE: polygons (a list of ``[x0, y0, x1, y1, ...]``)
    are rasterized and merged, an uncompressed RLE (``counts`` a list) is compressed, a compressed one
    is kept as it is (byte for byte). Raises ValueError for anything else, for a size not ``height`` x
    ``width``, or for what pycocotools cannot take safely: its C code trusts its input (a huge coordinate
    is a segfault, runs that do not cover ``height`` x ``width`` pixels hang later merges), so everything is
    checked here first."""
    if not all(type(v) is int and 0 < v <= MAX_SIDE for v in (height, width)):
        raise ValueError(f"image size {height!r} x {width!r} is not two integers from 1 to {MAX_SIDE}")
    if isinstance(segmentation, list):
        _check_polygons(segmentation, height, width)
        return _from_coco(_coco.merge(_coco.frPyObjects(segmentation, height, width)))
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise ValueError("segmentation is neither polygons nor an RLE {size, counts}")
    size, counts = segmentation["size"], segmentation["counts"]
    if not isinstance(size, list) or [type(v) for v in size] != [int, int] or size != [height, width]:
        raise ValueError(f"RLE of size {size!r} for a {height}x{width} image")
    if isinstance(counts, list):
        if not all(type(c) is int and c >= 0 for c in counts) or sum(counts) != height * width:
            raise ValueError(f"RLE run lengths must be integers >= 0 summing to {height}x{width}")
        return _from_coco(_coco.frPyObjects({"size": [height, width], "counts": counts}, height, width))
    if not isinstance(counts, str):
        raise ValueError("RLE counts must be a string (compressed) or a list of run lengths")
    _check_counts(counts, height * width)
    return {"size": [height, width], "counts": counts}


def _check_polygons(polygons: list, height: int, width: int) -> None:
    """Each polygon at least 3 points of finite numbers within the image grown by its size on every side
    (COCO's own polygons stray a pixel or so past the edge; nothing real strays further), their outlines at
    most ``MAX_OUTLINE`` pixels long together (pycocotools allocates 5 samples per pixel of outline)."""
    if not polygons or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in polygons):
        raise ValueError("polygon segmentation must be a list of [x0, y0, x1, y1, ...] with at least 3 points")
    outline = 0.0
    for polygon in polygons:
        if not all(type(v) in (int, float) and abs(v) < 2**53 for v in polygon):
            raise ValueError("polygon coordinates must be numbers")
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if not (np.isfinite(xy).all() and (np.abs(xy - [width / 2, height / 2]) <= [1.5 * width, 1.5 * height]).all()):
            raise ValueError(f"polygon coordinates must be finite and within {width}x{height} grown by its own size "
                             "on every side")
        outline += float(np.abs(np.diff(xy, axis=0, append=xy[:1])).max(axis=1).sum())
    if outline > MAX_OUTLINE:
        raise ValueError(f"polygon outlines {outline:.0f} pixels long, over {MAX_OUTLINE}")


def _check_counts(counts: str, pixels: int) -> None:
    """Compressed counts: characters pycocotools writes ('0'..'o'), whole counts of at most 35 bits, runs >= 0
    covering exactly ``pixels``."""
    if not counts.isascii() or any(not "0" <= ch <= "o" for ch in counts):
        raise ValueError("RLE counts hold characters outside pycocotools' alphabet ('0'..'o')")
    c = np.frombuffer(counts.encode("ascii"), dtype=np.uint8) - 48
    ends = np.flatnonzero((c & 0x20) == 0)
    if ends.size == 0 or ends[-1] != len(counts) - 1 or np.diff(ends, prepend=-1).max() > _COUNT_CHARS:
        raise ValueError("RLE counts are cut off or hold a count longer than 32 bits")
    runs = run_lengths({"counts": counts})
    if (runs < 0).any() or int(runs.sum()) != pixels:
        raise ValueError(f"RLE runs cover {int(runs.sum())} pixels ({int((runs < 0).sum())} negative runs), "
                         f"not the image's {pixels}")


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


def run_lengths(rle: Rle) -> np.ndarray:
    """The uncompressed counts of an RLE (alternating runs of 0s and 1s, column-major, 0s first).

    The inverse of pycocotools' string compression (``rleFrString`` in maskApi.c), vectorized: each
    count is 5-bit groups (low first) whose last group has bit 0x20 clear and bit 0x10 as the sign;
    each count after the second is stored as a delta from the count two before.
    """
    counts = rle["counts"]
    raw = counts.encode("ascii") if isinstance(counts, str) else counts
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = (c & 0x20) == 0
    group = np.concatenate(([0], np.cumsum(last)[:-1]))  # which count each character belongs to
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    k = np.arange(c.size) - starts[group]  # position of the character within its count
    values = np.zeros(int(group[-1]) + 1, dtype=np.int64)
    np.add.at(values, group, (c & 0x1F) << (5 * k))
    ends = np.flatnonzero(last)
    negative = (c[ends] & 0x10) != 0
    values[negative] |= -1 << (5 * (k[ends[negative]] + 1))
    values[2::2] = np.cumsum(values[2::2])  # x[i] += x[i-2] for i > 2: running sums over the evens from 2
    values[1::2] = np.cumsum(values[1::2])  # and over the odds from 1
    return values


def complement(rle: Rle) -> Rle:
    """Every pixel not in the mask: the same runs with 0s and 1s swapped, never decoded."""
    counts = run_lengths(rle)
    counts = counts[1:] if counts.size and counts[0] == 0 else np.concatenate(([0], counts))
    h, w = rle["size"]
    return _from_coco(_coco.frPyObjects({"size": [h, w], "counts": counts.astype(np.uint32)}, h, w))


def subtract(a: Rle, b: Rle) -> Rle:
    """Pixels of ``a`` not in ``b``: ``a`` and not ``a & b`` (pycocotools has no difference).

    Complementing the overlap, not ``b``, keeps the cost to the runs of ``a``: ``b`` may be the union
    of every region accepted so far, with many more runs.
    """
    overlap = intersection(a, b)
    if area(overlap) == 0:
        return a
    return intersection(a, complement(overlap))


def intersection_areas(a: Sequence[Rle], b: Sequence[Rle]) -> np.ndarray:
    """Pairwise pixel counts of ``a[i] & b[j]``, from the IoU matrix: |A&B| = IoU (|A|+|B|) / (1+IoU)."""
    ious = iou(a, b)
    areas_a = np.array([area(r) for r in a], dtype=np.float64)[:, None]
    areas_b = np.array([area(r) for r in b], dtype=np.float64)[None, :]
    return np.rint(ious * (areas_a + areas_b) / (1 + ious)).astype(np.int64)


def empty(h: int, w: int) -> Rle:
    """An all-zero mask: one run of h*w zeros, without allocating the pixels."""
    return _from_coco(_coco.frPyObjects({"size": [h, w], "counts": np.array([h * w], dtype=np.uint32)}, h, w))


def containment(a: Rle, b: Rle) -> float:
    """Fraction of ``a``'s pixels that lie inside ``b``."""
    a_area = area(a)
    return area(intersection(a, b)) / a_area if a_area else 0.0


def nms(rles: Sequence[Rle], scores: Sequence[float], iou_threshold: float) -> list[int]:
    """Greedy mask NMS; returns kept indices, best score first (ties broken by index).

    Mask IoU is at most min(area)/max(area) and at most the boxes' overlap over the smaller box's
    complement; only pairs whose bound passes the threshold get their mask IoU computed.
    """
    order = sorted(range(len(rles)), key=lambda i: (-scores[i], i))
    if not order:
        return []
    areas = np.array([area(r) for r in rles], dtype=np.float64)
    boxes = np.array([bbox(r) for r in rles], dtype=np.float64).reshape(-1, 4)
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    ix = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    iy = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter_bound = np.minimum(ix * iy, np.minimum(areas[:, None], areas[None]))
    bound = inter_bound / np.maximum(areas[:, None] + areas[None] - inter_bound, 1)
    kept: list[int] = []
    for i in order:
        rivals = [j for j in kept if bound[i, j] > iou_threshold]
        if not rivals or (iou([rles[i]], [rles[j] for j in rivals])[0] <= iou_threshold).all():
            kept.append(i)
    return kept
