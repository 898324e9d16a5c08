"""One-to-one matching of predicted to reference entity instances, as PancapScore does it.

The cost follows the reference implementation's priorities (Lin et al., Panoptic Captioning, NeurIPS
2025; ``pancapscore/eval_alldims.py``): a pair can match only when its tags are the same word or
similar enough (``min_tag_similarity``); among candidates the tag similarity counts most, then how
alike the whole phrases read (which tells apart two instances of one tag by what is said of them),
then the box IoU when it reaches ``min_iou``. Hungarian assignment (scipy) picks the matching. A
matched pair counts for tags; it counts for locations too when its IoU reaches ``min_iou``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from groundcap.evaluate.content import Box, Entity

MIN_TAG_SIMILARITY = 0.5  # the reference implementation's ethr
MIN_IOU = 0.5  # its lthr
_TAG_WEIGHT, _PHRASE_WEIGHT, _IOU_WEIGHT, _NO_MATCH = 100.0, 10.0, 1.0, 1e6


def iou(a: Box | None, b: Box | None) -> float:
    """IoU of two [x, y, w, h] boxes (0 when either is missing or empty)."""
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


@dataclass(frozen=True)
class Match:
    pairs: dict[int, int]  # reference entity key -> predicted entity key
    located: frozenset[int]  # reference keys whose matched prediction's box overlaps enough


def match(reference: list[Entity], predicted: list[Entity], tag_similarity: np.ndarray,
          phrase_similarity: np.ndarray, min_tag_similarity: float = MIN_TAG_SIMILARITY,
          min_iou: float = MIN_IOU) -> Match:
    """The matching; ``tag_similarity[i, j]`` and ``phrase_similarity[i, j]`` compare reference i with
    prediction j (an exact tag is 1 whatever the embedder says)."""
    if not reference or not predicted:
        return Match({}, frozenset())
    cost = np.full((len(reference), len(predicted)), _NO_MATCH)
    overlap = np.zeros_like(cost)
    for i, r in enumerate(reference):
        for j, p in enumerate(predicted):
            tag = 1.0 if r.tag == p.tag else float(tag_similarity[i, j])
            if tag < min_tag_similarity:
                continue
            overlap[i, j] = iou(r.box, p.box)
            cost[i, j] = -(_TAG_WEIGHT * tag + _PHRASE_WEIGHT * float(phrase_similarity[i, j])
                           + (_IOU_WEIGHT * overlap[i, j] if overlap[i, j] >= min_iou else 0.0))
    rows, cols = linear_sum_assignment(cost)
    pairs = {reference[i].key: predicted[j].key for i, j in zip(rows, cols, strict=True) if cost[i, j] < _NO_MATCH}
    located = frozenset(reference[i].key for i, j in zip(rows, cols, strict=True)
                        if cost[i, j] < _NO_MATCH and overlap[i, j] >= min_iou)
    return Match(pairs, located)


def f1(recall: float, precision: float) -> float:
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)
