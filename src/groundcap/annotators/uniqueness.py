"""Captions that single out their region (URECA): find the ones that fit several regions.

Two short captions clash when their content words are (nearly) the same set: "a gray region" fits
every gray region of the image. The captioner is asked to ``refine`` the clashing ones (the attribute
captioner adds its next measured qualifier, a VLM is re-prompted with the other regions' captions)
for a bounded number of rounds; what still clashes is recorded as not unique, never silently kept.
"""

from __future__ import annotations

import re

import numpy as np

from groundcap.annotators.base import RegionCaption, RegionCaptioner

_STOP = {"a", "an", "the", "of", "in", "on", "at", "with", "and", "its", "it", "is"}


def words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP)


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of the content words of two captions."""
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def clashes(captions: list[RegionCaption], max_similarity: float) -> dict[int, list[int]]:
    """region_id -> the other regions whose short caption is at least ``max_similarity`` alike."""
    found: dict[int, list[int]] = {}
    for i, a in enumerate(captions):
        for b in captions[i + 1:]:
            if similarity(a.short, b.short) >= max_similarity:
                found.setdefault(a.region_id, []).append(b.region_id)
                found.setdefault(b.region_id, []).append(a.region_id)
    return found


def make_unique(
    captioner: RegionCaptioner,
    image: np.ndarray,
    regions: list[dict],
    captions: list[RegionCaption],
    *,
    rounds: int,
    max_similarity: float,
) -> tuple[list[RegionCaption], dict[int, list[int]]]:
    """Captions after up to ``rounds`` of refinement, and the clashes that remain."""
    found = clashes(captions, max_similarity)
    for _ in range(rounds):
        if not found:
            break
        captions = captioner.refine(image, regions, captions, found)
        found = clashes(captions, max_similarity)
    return captions, found
