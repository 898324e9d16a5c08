"""Boxes from several detectors merged into one list, by IoU and label, never by score.

Scores of different detectors are not comparable (a Grounding DINO 0.4 is not an OWLv2 0.4), so
there is no NMS across detectors: a box that a later detector finds again (same label, IoU at or
above the threshold) is merged into the earlier one, which keeps its box and score and gains the
other detector's name in ``source`` ("grounding_dino+owlv2"): agreement the QA stage can count.
Within one detector its scores are comparable, so its own duplicates are suppressed per label
(``nms_per_label``) before the merge.
"""

from __future__ import annotations

from dataclasses import replace

from groundcap.annotators.base import Detection


def box_iou(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    """IoU of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def merge(per_detector: list[list[Detection]], iou: float) -> list[Detection]:
    """One list: detectors in priority order, each detection merged into the first kept box it matches."""
    merged: list[Detection] = []
    for detections in per_detector:
        own = len(merged)  # a detector never merges into its own boxes
        for det in sorted(detections, key=lambda d: -d.score):
            match = next(
                (i for i, kept in enumerate(merged[:own])
                 if kept.label.lower() == det.label.lower() and box_iou(kept.bbox, det.bbox) >= iou
                 and det.source not in kept.source.split("+")),
                None,
            )
            if match is None:
                merged.append(det)
            else:
                kept = merged[match]
                merged[match] = replace(kept, source=f"{kept.source}+{det.source}", text=kept.text or det.text)
    return merged


def nms_per_label(detections: list[Detection], iou: float) -> list[Detection]:
    """Greedy suppression within each label, best score first (ties by order): two labels on one box both stay."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: -d.score):
        if all(k.label != det.label or box_iou(k.bbox, det.bbox) < iou for k in kept):
            kept.append(det)
    return kept
