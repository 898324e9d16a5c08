"""Grounded text: phrases that point at regions, written ``<rN>phrase</rN>`` (N = a region_id).

The one place that writes, parses, unwraps and renders these references, so the scene captioners,
QA and the Pancap-style rendering agree on the syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

_REF = re.compile(r"<r(\d+)>(.*?)</r\1>", re.DOTALL)


def ref(region_id: int, phrase: str) -> str:
    if "<r" in phrase or "</r" in phrase:
        raise ValueError(f"phrase must not contain reference tags: {phrase!r}")
    return f"<r{region_id}>{phrase}</r{region_id}>"


def references(text: str) -> list[tuple[int, str]]:
    """(region_id, phrase) for every reference, in order of appearance."""
    return [(int(m.group(1)), m.group(2)) for m in _REF.finditer(text)]


def mentions(text: str) -> list[tuple[int, int, int, str]]:
    """(start, end, region_id, phrase) for every reference, in order: where each sits in ``text``."""
    return [(m.start(), m.end(), int(m.group(1)), m.group(2)) for m in _REF.finditer(text)]


def is_well_formed(text: str) -> bool:
    """True when every ``<rN>``/``</rN>`` tag belongs to a matched, non-nested pair."""
    leftover = _REF.sub(lambda m: m.group(2), text)
    return "<r" not in leftover and "</r" not in leftover and all("<r" not in p for _, p in references(text))


def unwrap(text: str, keep: Iterable[int]) -> str:
    """Drop the tags of references whose region is not in ``keep``, leaving their phrase as plain text."""
    keep = set(keep)
    return _REF.sub(lambda m: m.group(0) if int(m.group(1)) in keep else m.group(2), text)


def plain(text: str) -> str:
    return unwrap(text, ())


def render_boxes(text: str, boxes: Mapping[int, Sequence[float]], width: int, height: int) -> str:
    """Pancap style: ``phrase [x1, y1, x2, y2]`` with coordinates normalized to 0-1, 3 decimals."""
    ids = list(boxes)
    return render_labels(text, dict(zip(ids, box_labels([boxes[i] for i in ids], width, height), strict=True)))


def box_labels(boxes: Sequence[Sequence[float]] | np.ndarray, width: ArrayLike, height: ArrayLike) -> list[str]:
    """``[x1, y1, x2, y2]`` of each ``[x, y, w, h]`` box in its image of ``width`` x ``height`` (one size, or one
    per box), normalized and clipped to 0-1, 3 decimals: every box of a batch in one call (build renders a
    part's thousands of boxes; one f-string per coordinate was most of the Pancap column's time)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = np.asarray(width, dtype=np.float64), np.asarray(height, dtype=np.float64)
    if (w <= 0).any() or (h <= 0).any():
        raise ValueError(f"an image size must be positive to normalize its boxes, got {width} x {height}")
    c = np.stack([b[:, 0] / w, b[:, 1] / h, (b[:, 0] + b[:, 2]) / w, (b[:, 1] + b[:, 3]) / h], axis=1)
    c = np.where(c > 1.0, 1.0, np.where(c < 0.0, 0.0, c))  # as min(max(c, 0.0), 1.0): -0.0 and NaN kept
    return ["[{:.3f}, {:.3f}, {:.3f}, {:.3f}]".format(*row) for row in c.tolist()]


def render_labels(text: str, labels: Mapping[int, str]) -> str:
    """Each reference's phrase followed by its region's label (``box_labels``), the tags dropped."""
    return _REF.sub(lambda m: f"{m.group(2)} {labels[int(m.group(1))]}", text)
