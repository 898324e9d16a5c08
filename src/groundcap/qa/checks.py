"""Structural checks every region and image must pass, whatever engine annotated it.

Each check is a named predicate; a record's score is the fraction of its checks that pass, and its
reasons name the checks that failed. Deeper checks (cross-model agreement, pixel evidence, dedup)
plug in beside these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from groundcap import grounding, masks


@dataclass
class Verdict:
    score: float
    passed: bool
    reasons: list[str] = field(default_factory=list)


def _verdict(results: dict[str, bool]) -> Verdict:
    failed = [name for name, ok in results.items() if not ok]
    return Verdict(score=round(1 - len(failed) / len(results), 4), passed=not failed, reasons=failed)


def check_region(
    region: dict, caption: dict | None, height: int, width: int, min_area_frac: float, require_unique: bool = True
) -> Verdict:
    """Mask decodes to the image's size, its area/bbox fields agree with it, it is big enough, it has
    captions that the verifier did not reject and (if required) that single it out."""
    seg = region["segmentation"]
    size_ok = list(seg["size"]) == [height, width]
    decoded = masks.decode(seg) if size_ok else None
    area = int(decoded.sum()) if decoded is not None else -1
    bbox_ok = decoded is not None and area > 0 and np.allclose(_bbox(decoded), region["bbox"])
    return _verdict(
        {
            "mask size differs from image": size_ok,
            "area field disagrees with mask": area == region["area"],
            "bbox field disagrees with mask": bbox_ok,
            "region below qa.min_region_area_frac": area >= min_area_frac * height * width,
            "short caption missing": bool(caption and caption["short"].strip()),
            "detailed caption missing": bool(caption and caption["detailed"].strip()),
            "caption rejected by verifier": not (caption and caption.get("verdict") == "rejected"),
            "caption fits other regions too": not (require_unique and caption and caption.get("unique") is False),
        }
    )


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def check_image(scene_caption: str | None, kept_ids: set[int], all_ids: set[int], min_regions: int) -> Verdict:
    """Enough regions survive, and the scene caption is present, well formed and points only at real regions."""
    text = scene_caption or ""
    refs = {rid for rid, _ in grounding.references(text)}
    return _verdict(
        {
            "fewer regions than qa.min_regions": len(kept_ids) >= min_regions,
            "scene caption missing": bool(grounding.plain(text).strip()),
            "scene caption has malformed references": grounding.is_well_formed(text),
            "scene caption references unknown regions": refs <= all_ids,
        }
    )
