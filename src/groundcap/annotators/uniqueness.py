"""Captions that single out their region (URECA): find the ones that fit several regions.

Two regions' captions clash when a reader could not tell the regions apart from what they read: their
short and detailed captions together (``claims.caption_text``) mean the same by sentence embeddings
(cosine at least ``max_similarity``), and no claim tells them apart: a colour, material, count or quoted
text that one says and the other contradicts (``qa.claims``), two different places ("at the bottom" and
"at the bottom right" are two cells of the 3x3 grid captions name, though ``qa.claims`` lets one model's
vaguer word agree with another's), or shares of the image ``AREA_RATIO`` apart ("covering 11%", "30%").
Each signal alone misjudges: the embeddings read "a cup on the left" and "a cup on the right" as one
caption (cosine 0.99), word overlap reads "a small dog" and "a little puppy" as two, and "a person"
holding an umbrella and "a person" riding a bicycle as one. Labels are left to the embeddings, since "a
mug" and "a cup" may well name one thing.

The captioner is asked to ``refine`` the clashing ones (the attribute captioner adds its next measured
qualifier, a VLM is re-prompted with the other regions' captions) for a bounded number of rounds; what
still clashes is recorded as not unique, never silently kept.
"""

from __future__ import annotations

import itertools

import numpy as np

from groundcap.annotators.base import RegionCaption, RegionCaptioner
from groundcap.qa import claims
from groundcap.qa.consistency import Embedder

# the claim kinds whose disagreement (as ``qa.claims`` compares them) tells two regions apart; labels: see above
DISTINGUISHING = ("color", "material", "count", "text")
AREA_RATIO = 1.5  # stated shares of the image this far apart (the larger over the smaller) tell regions apart


def clashes(captions: list[RegionCaption], max_similarity: float, embedder: Embedder,
            known: dict[str, np.ndarray] | None = None) -> dict[int, list[int]]:
    """region_id -> the other regions a reader could take its captions for. A caption with no short text
    clashes with nothing: it is rejected as unwritten wherever it is judged. ``known`` (text -> embedding)
    spares re-encoding the texts a refinement round left as they were."""
    written = [c for c in captions if c.short.strip()]
    if len(written) < 2:
        return {}
    texts = [claims.caption_text(c.short, c.detailed) for c in written]
    said = [claims.parse(t) for t in texts]
    # the claims first: only the captions of a pair they cannot tell apart need embeddings (the costly part)
    open_pairs = [(i, j) for i, j in itertools.combinations(range(len(texts)), 2) if not _told_apart(said[i], said[j])]
    if not open_pairs:
        return {}
    needed = sorted({k for pair in open_pairs for k in pair})
    known = {} if known is None else known
    new = [t for t in dict.fromkeys(texts[k] for k in needed) if t not in known]
    if new:
        known.update(zip(new, embedder.encode(new).astype(np.float64), strict=True))
    vectors = np.stack([known[texts[k]] for k in needed])
    similarity, row = vectors @ vectors.T, {k: n for n, k in enumerate(needed)}
    found: dict[int, list[int]] = {}
    for i, j in open_pairs:
        if similarity[row[i], row[j]] < max_similarity:
            continue
        a, b = written[i].region_id, written[j].region_id
        found.setdefault(a, []).append(b)
        found.setdefault(b, []).append(a)
    return found


def _told_apart(a: list[claims.Claim], b: list[claims.Claim]) -> bool:
    """Whether one caption claims what the other contradicts, so a reader can tell their regions apart."""
    if claims.agreement(a, b, kinds=DISTINGUISHING)[1]:
        return True
    places, areas = ([next((c.value for c in said if c.kind == kind), None) for said in (a, b)]
                     for kind in ("position", "area"))
    if None not in places and places[0] != places[1]:
        return True
    return None not in areas and max(areas) > AREA_RATIO * min(areas)


def make_unique(
    captioner: RegionCaptioner,
    image: np.ndarray,
    regions: list[dict],
    captions: list[RegionCaption],
    *,
    rounds: int,
    max_similarity: float,
    embedder: Embedder,
) -> tuple[list[RegionCaption], dict[int, list[int]]]:
    """Captions after up to ``rounds`` of refinement, and the clashes that remain."""
    known: dict[str, np.ndarray] = {}
    found = clashes(captions, max_similarity, embedder, known)
    for _ in range(rounds):
        if not found:
            break
        captions = captioner.refine(image, regions, captions, found)
        found = clashes(captions, max_similarity, embedder, known)
    return captions, found
