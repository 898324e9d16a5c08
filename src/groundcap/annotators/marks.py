"""Set-of-mark images (DenseWorld's scene stage): every region outlined and its id written at the region,
so a composer that sees the image can tie each ``<rN>`` it writes to what it sees.

The number sits at the mask's point farthest from its edge (inside the region even when its centroid is
not: a ring, an L), is sized from the image it is drawn on (the copy the engine receives, so it reads
the same at any photo size), white with a black outline (legible on any background), and moves off a
number already drawn there rather than cover it.
"""

from __future__ import annotations

import cv2
import numpy as np

from groundcap import masks

FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_HEIGHT = 14  # px: the smallest digit height drawn, however small the image
HEIGHT_SHARE = 1 / 36  # digit height as a share of the longer side of the image drawn on
# outline colours, cycled by region id: saturated and far apart, none close to white or black
COLORS = ((255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 220, 120), (230, 80, 255), (0, 230, 230),
          (255, 140, 0), (160, 255, 60))


def scaled(points: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """(x, y) pixel points scaled by (sx, sy) onto a resized copy, as int32 for ``cv2.polylines``: pixel
    centres map onto pixel centres, so at scale 1 the points stay as they are."""
    return np.round((np.asarray(points) + 0.5) * np.asarray(scale) - 0.5).astype(np.int32).reshape(-1, 1, 2)


def contours(mask: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> list[np.ndarray]:
    """The mask's outer contours, found at the mask's size, ``scaled`` onto a resized copy."""
    found = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    return [scaled(c[:, 0], scale) for c in found]


def anchor(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the mask's pixel farthest from its edge (the image border counts as edge), at the pixel's
    centre; None for an empty mask. Of equally deep pixels, the one nearest their mean (first in row order)."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    y0, x0 = ys.min(), xs.min()
    window = np.pad(mask[y0:ys.max() + 1, x0:xs.max() + 1].astype(np.uint8), 1)
    distance = cv2.distanceTransform(window, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ys, xs = np.nonzero(distance == distance.max())
    # of the deepest pixels (a ridge in a long shape), the one nearest their mean: the ridge's middle
    i = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return float(x0 + xs[i] - 1) + 0.5, float(y0 + ys[i] - 1) + 0.5


def draw(view: np.ndarray, regions: list[dict], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A copy of ``view`` with each region outlined and numbered by its ``region_id``.

    ``view`` shows the ``box`` (x, y, w, h; default the whole image) of the image the regions' masks are in,
    resized to any size (``VlmBackend.view``). A region whose mask misses the box is numbered at the centre
    of its box, clipped to the view.
    """
    out = view.copy()
    vh, vw = view.shape[:2]
    height = max(MIN_HEIGHT, round(max(vh, vw) * HEIGHT_SHARE))
    scale = cv2.getFontScaleFromHeight(FONT, height, 1)
    ink = max(1, round(height / 8))
    edge = max(1, round(max(vh, vw) / 400))
    spots = []
    for r in regions:
        rid = int(r["region_id"])
        whole = masks.decode(r["segmentation"])
        x, y, w, h = box or (0, 0, whole.shape[1], whole.shape[0])
        mask, sx, sy = whole[y:y + h, x:x + w], vw / w, vh / h
        cv2.polylines(out, contours(mask, (sx, sy)), True, COLORS[rid % len(COLORS)], edge)
        at = anchor(mask)
        if at is None:
            bx, by, bw, bh = r["bbox"]
            at = (min(max(bx + bw / 2 - x, 0.0), w), min(max(by + bh / 2 - y, 0.0), h))
        spots.append((str(rid), at[0] * sx, at[1] * sy))
    placed: list[tuple[int, int, int, int]] = []
    for text, cx, cy in spots:
        (tw, th), _ = cv2.getTextSize(text, FONT, scale, ink)
        pad = ink + 2
        shifts = [(0, 0), (0, -th - 2 * pad), (0, th + 2 * pad), (-tw - 2 * pad, 0), (tw + 2 * pad, 0)]
        tries = [_spot(cx + dx, cy + dy, tw, th, pad, vw, vh) for dx, dy in shifts]
        # the first spot no number covers yet; when none is free, on the region itself
        left, top = next((s for s in tries if not any(_overlap(s, tw, th, pad, o) for o in placed)), tries[0])
        placed.append((left, top, tw, th))
        cv2.putText(out, text, (left, top + th), FONT, scale, (0, 0, 0), ink + 2 * (ink // 2 + 1), cv2.LINE_AA)
        cv2.putText(out, text, (left, top + th), FONT, scale, (255, 255, 255), ink, cv2.LINE_AA)
    return out


def _spot(cx: float, cy: float, tw: int, th: int, pad: int, vw: int, vh: int) -> tuple[int, int]:
    """Top left of a ``tw`` x ``th`` text centred on (cx, cy), moved inside the view."""
    return (int(min(max(cx - tw / 2, pad), max(pad, vw - tw - pad))),
            int(min(max(cy - th / 2, pad), max(pad, vh - th - pad))))


def _overlap(at: tuple[int, int], tw: int, th: int, pad: int, other: tuple[int, int, int, int]) -> bool:
    """Whether a text at ``at`` (with ``pad`` around it) touches ``other`` (left, top, width, height)."""
    (x, y), (ox, oy, ow, oh) = at, other
    return x - pad < ox + ow + pad and ox - pad < x + tw + pad and y - pad < oy + oh + pad and oy - pad < y + th + pad
