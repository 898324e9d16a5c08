"""Plain-English pieces the embedded captioners and QA share: where a point lies, and how lists are said.

Kept apart from any one backend so the region captioner and the scene composer can change
independently and always name positions the same way; outside ``annotators`` so that ``qa.evidence``
judges positions by the same grid without importing the captioners.
"""

from __future__ import annotations

import numpy as np

# 3x3 grid cell of a point -> position name, and how a sentence says it
_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "center", "right")
POSITION_PHRASES = {
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right",
}  # fmt: skip


def position_name(cx: float, cy: float, width: int, height: int) -> str:
    """Name of the 3x3 grid cell holding the point (cx, cy): "top left", "center", "bottom"..."""
    row = _ROWS[min(2, int(3 * cy / height))]
    col = _COLS[min(2, int(3 * cx / width))]
    if row == "middle":
        return col
    return row if col == "center" else f"{row} {col}"


def centroid(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float]:
    """Mean (x, y) of the centres of the pixels at (ys, xs), e.g. ``centroid(*np.nonzero(mask))``."""
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def pct(frac: float) -> str:
    return f"{round(100 * frac)}%" if frac >= 0.005 else "less than 1%"


def join_words(items: list[str]) -> str:
    """Join as "a", "a and b" or "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
