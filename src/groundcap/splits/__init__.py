"""Deterministic, seeded, group-aware train/validation/test assignment by hash, not by position.

A group's split depends only on the seed and its group id: ``key = sha256(seed:group)`` read as a
number in [0, 1), cut at the cumulative fractions. Every image of a group (a near-duplicate cluster,
``work/dedup``) lands in the group's split, so no near-duplicate crosses train/validation/test; an
image alone is its own group. The same group lands in the same split in every run and in every
later, larger version of the dataset.

``human_test`` is not drawn by hash: it holds the images people audited and accepted (or
corrected), like SA-Pancap's human-curated test set; the split stage puts them there.

Tiny datasets can leave a split empty by chance; when there are at least as many groups as splits,
each empty split takes the group whose key lies nearest to its interval (deterministic, and only
ever applied while a split would otherwise be empty).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping

SPLITS = ("train", "validation", "test")  # drawn by hash
HUMAN_TEST = "human_test"  # audited by people (groundcap.audit)
ALL_SPLITS = (*SPLITS, HUMAN_TEST)


def key(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
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


def assign(groups: Mapping[str, str], seed: int, fractions: Mapping[str, float]) -> dict[str, tuple[str, float]]:
    """``image_id -> (split, key)`` for every image of ``groups`` (``image_id -> group id``)."""
    bounds = _bounds(fractions)
    keys = {g: key(g, seed) for g in sorted(set(groups.values()))}
    split_of = {g: next(s for s in SPLITS if bounds[s][0] <= k < bounds[s][1] or k == 1.0) for g, k in keys.items()}
    wanted = [s for s in SPLITS if bounds[s][1] > bounds[s][0]]
    if len(keys) >= len(wanted):
        for split in wanted:
            counts = Counter(split_of.values())
            if counts[split]:
                continue
            low, high = bounds[split]
            donors = [g for g, s in split_of.items() if counts[s] > 1]
            nearest = min(donors, key=lambda g: (min(abs(keys[g] - low), abs(keys[g] - high)), g))
            split_of[nearest] = split
    return {image: (split_of[g], keys[g]) for image, g in groups.items()}
