"""Deterministic, seeded train/validation/test assignment by hash, not by position.

An image's split depends only on the seed and its ``image_id``: ``key = sha256(seed:image_id)`` read
as a number in [0, 1), cut at the cumulative fractions. So the same image lands in the same split in
every run and in every later, larger version of the dataset.

Tiny datasets can leave a split empty by chance; when there are at least as many images as splits,
each empty split takes the image whose key lies nearest to its interval (deterministic, and only
ever applied while a split would otherwise be empty).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

SPLITS = ("train", "validation", "test")


def key(image_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _bounds(fractions: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"split.fractions names unknown splits {sorted(unknown)}; use {', '.join(SPLITS)}")
    total = sum(fractions.get(s, 0.0) for s in SPLITS)
    if total <= 0 or any(fractions.get(s, 0.0) < 0 for s in SPLITS):
        raise ValueError("split.fractions must be non-negative and sum to more than 0")
    bounds, low = {}, 0.0
    for s in SPLITS:
        high = low + fractions.get(s, 0.0) / total
        bounds[s] = (low, high)
        low = high
    bounds[SPLITS[-1]] = (bounds[SPLITS[-1]][0], 1.0)
    return bounds


def assign(image_ids: Iterable[str], seed: int, fractions: Mapping[str, float]) -> dict[str, tuple[str, float]]:
    """``image_id -> (split, key)`` for every id."""
    bounds = _bounds(fractions)
    keys = {i: key(i, seed) for i in image_ids}
    out = {i: (next(s for s in SPLITS if bounds[s][0] <= k < bounds[s][1] or k == 1.0), k) for i, k in keys.items()}
    wanted = [s for s in SPLITS if bounds[s][1] > bounds[s][0]]
    if len(keys) >= len(wanted):
        for split in wanted:
            counts = {s: 0 for s in SPLITS}
            for s, _ in out.values():
                counts[s] += 1
            if counts[split]:
                continue
            low, high = bounds[split]
            donors = [i for i, (s, _) in out.items() if counts[s] > 1]
            nearest = min(donors, key=lambda i: (min(abs(keys[i] - low), abs(keys[i] - high)), i))
            out[nearest] = (split, keys[nearest])
    return out
