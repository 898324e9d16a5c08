"""Named checks that decide what enters the release, each decision recorded with its reasons.

A check is a name (the reason recorded when it fails) and a boolean. A record's score is the
fraction of its checks that pass; it passes when none fails. Checks whose params say ``flag``
instead of ``fail`` are recorded as ``flagged: <name>`` without failing the record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from groundcap import grounding, masks

ACTIONS = ("fail", "flag")


@dataclass
class Outcome:
    """A QA decision on a region or an image: its score, whether it passed, and the checks that failed or flagged."""

    score: float
    passed: bool
    reasons: list[str] = field(default_factory=list)


def verdict(checks: dict[str, bool], flags: dict[str, bool] | None = None) -> Outcome:
    """Score and reasons from ``checks``; failed ``flags`` are noted but do not fail the record."""
    failed = [name for name, ok in checks.items() if not ok]
    flagged = [f"flagged: {name}" for name, ok in (flags or {}).items() if not ok]
    return Outcome(score=round(1 - len(failed) / len(checks), 4), passed=not failed, reasons=failed + flagged)


def split_by_action(results: dict[str, tuple[bool, str]]) -> tuple[dict[str, bool], dict[str, bool]]:
    """``{name: (ok, action)}`` -> (checks that fail a record, checks that only flag it).

    ``action`` is one of ``ACTIONS`` (the qa stage's param types check qa.*.action at load)."""
    return ({n: ok for n, (ok, a) in results.items() if a == "fail"},
            {n: ok for n, (ok, a) in results.items() if a == "flag"})


def region_checks(
    region: dict, caption: dict | None, height: int, width: int, min_area_frac: float, require_unique: bool = True
) -> dict[str, bool]:
    """Mask decodes to the image's size, its area/bbox fields agree with it, it is big enough, it has
    captions that the verifier did not reject and (if required) that single it out."""
    seg = region["segmentation"]
    size_ok = list(seg["size"]) == [height, width]
    decoded = masks.decode(seg) if size_ok else None
    area = int(decoded.sum()) if decoded is not None else -1
    bbox_ok = decoded is not None and area > 0 and np.allclose(_bbox(decoded), region["bbox"])
    return {
        "mask size differs from image": size_ok,
        "area field disagrees with mask": area == region["area"],
        "bbox field disagrees with mask": bbox_ok,
        "region below qa.min_region_area_frac": area >= min_area_frac * height * width,
        "short caption missing": bool(caption and caption["short"].strip()),
        "detailed caption missing": bool(caption and caption["detailed"].strip()),
        "caption rejected by verifier": not (caption and caption.get("verdict") == "rejected"),
        "caption fits other regions too": not (require_unique and caption and caption.get("unique") is False),
    }


def part_link(region: dict, by_id: dict[int, dict]) -> dict[str, bool]:
    """A part names an entity of its image as its parent and lies in that entity's box; an entity has no
    parent. Segmentation clips parts to their parent, so a broken link is a bug or a bad given annotation."""
    if region["granularity"] != "part":  # no check for an entity without one: its score stays what it was
        return {} if region["parent_id"] is None else {"entity has a parent": False}
    parent = by_id.get(region["parent_id"])
    x, y, w, h = region["bbox"]
    inside = parent is not None and (parent["bbox"][0] <= x and parent["bbox"][1] <= y
                                     and x + w <= parent["bbox"][0] + parent["bbox"][2]
                                     and y + h <= parent["bbox"][1] + parent["bbox"][3])
    return {"part without a parent entity": parent is not None and parent["granularity"] != "part",
            "part outside its parent": inside}


def coverage(regions: list[dict], kept_ids: set[int], height: int, width: int) -> float:
    """The share of the image's pixels the kept entities cover (parts lie inside their entity: not counted).
    Entities never overlap, so their areas add up."""
    covered = sum(r["area"] for r in regions if r["region_id"] in kept_ids and r["granularity"] != "part")
    return round(min(1.0, covered / (height * width)), 4)


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def image_checks(scene_caption: str | None, kept_ids: set[int], all_ids: set[int], min_regions: int) -> dict[str, bool]:
    """Enough regions survive, and the scene caption is present, well formed and points only at real regions."""
    text = scene_caption or ""
    refs = {rid for rid, _ in grounding.references(text)}
    return {
        "fewer regions than qa.min_regions": len(kept_ids) >= min_regions,
        "scene caption missing": bool(grounding.plain(text).strip()),
        "scene caption has malformed references": grounding.is_well_formed(text),
        "scene caption references unknown regions": refs <= all_ids,
    }
