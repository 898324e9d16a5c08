"""The privacy pass's pixels (stage ``redact``): boxes grown and clipped, blurred, the image re-encoded.

The blur keeps only ``cells`` x ``cells`` block means of a box and interpolates them back bilinearly:
nothing finer than a cell survives (a face becomes a smooth blob), and the arithmetic is integer sums
and element-wise float64, so the same image gives the same bytes on every machine (an OpenCV filter
may take another code path on another CPU). A blurred image is always re-encoded as PNG, losslessly:
its decoded pixels outside the boxes are exactly ingest's, whatever the source format (re-encoding a
JPEG as JPEG would change every pixel of it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from groundcap.ingest import encode_png

# release.redact -> the labels an open-vocabulary detector is prompted with (Haar's cascades name their own)
TARGETS: dict[str, tuple[str, ...]] = {"faces_and_plates": ("face", "license plate"), "none": ()}

Box = tuple[int, int, int, int]  # x, y, w, h in whole pixels


def pixel_box(bbox: Sequence[float], pad_frac: float, width: int, height: int) -> Box | None:
    """``bbox`` ([x, y, w, h]) grown by ``pad_frac`` of its size on every side, to whole pixels inside
    the image; None when nothing of it is left."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = max(0, math.floor(x - pad_frac * w)), max(0, math.floor(y - pad_frac * h))
    x1, y1 = min(width, math.ceil(x + w + pad_frac * w)), min(height, math.ceil(y + h + pad_frac * h))
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _samples(n: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``n`` pixel centres: the cell before it, the cell after it and the weight of the latter."""
    pos = np.clip((np.arange(n) + 0.5) * cells / n - 0.5, 0, cells - 1)
    low = np.floor(pos).astype(np.int64)
    return low, np.minimum(low + 1, cells - 1), pos - low


def blur(image: np.ndarray, box: Box, cells: int) -> None:
    """Blur ``box`` (the part of it inside the image) of an HxWx3 uint8 ``image`` in place."""
    x, y, w, h = box
    region = image[max(0, y):max(0, y + h), max(0, x):max(0, x + w)]
    h, w = region.shape[:2]
    if not h or not w:
        return
    ny, nx = min(cells, h), min(cells, w)
    ey, ex = (np.arange(ny + 1) * h) // ny, (np.arange(nx + 1) * w) // nx
    sums = np.add.reduceat(np.add.reduceat(region.astype(np.int64), ey[:-1], axis=0), ex[:-1], axis=1)
    means = sums / (np.diff(ey)[:, None, None] * np.diff(ex)[None, :, None])
    ly, hy, fy = _samples(h, ny)
    lx, hx, fx = _samples(w, nx)
    rows = means[ly] * (1 - fy)[:, None, None] + means[hy] * fy[:, None, None]
    smooth = rows[:, lx] * (1 - fx)[None, :, None] + rows[:, hx] * fx[None, :, None]
    region[...] = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)


def blurred_png(image: np.ndarray, boxes: Sequence[Box], cells: int) -> bytes:
    """PNG bytes of ``image`` (not modified) with every box blurred, in order."""
    out = np.array(image, dtype=np.uint8, copy=True)
    for box in boxes:
        blur(out, box, cells)
    return encode_png(Image.fromarray(out, "RGB"))
