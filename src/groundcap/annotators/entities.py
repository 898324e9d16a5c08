"""Entity merge: prompted and generated candidate masks -> non-overlapping region records.

Model-agnostic (works on ``Mask`` records from any backend) and done in RLE space. Prompted masks
come from a detector's box, so they carry a label and win; generated ("everything") masks fill in
what the detectors did not name. A label in ``STUFF`` names amorphous background (sky, road, grass):
its masks become one "stuff" entity per label, whichever backend found them, as in panoptic datasets.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from groundcap import masks
from groundcap.annotators.base import Mask

# COCO panoptic's stuff classes that the packaged vocabulary names: one region each, not countable instances
STUFF = frozenset({"sky", "cloud", "grass", "field", "dirt", "sand", "snow", "water", "sea", "river", "road",
                   "sidewalk", "mountain", "hill", "rock", "tree", "bush", "building", "wall", "fence", "floor",
                   "ceiling", "carpet", "rug", "curtain"})


def is_stuff(label: str | None) -> bool:
    return (label or "").strip().lower() in STUFF


def parent_name(region: dict, regions: list[dict]) -> str | None:
    """The label of the entity a part region belongs to ("object" when it has none); None for an entity.
    Captioners name it, so that a part's captions say whose part it is."""
    if region.get("parent_id") is None:
        return None
    parent = next((r for r in regions if r["region_id"] == region["parent_id"]), None)
    if parent is None:
        raise ValueError(f"region {region['region_id']} is a part of region {region['parent_id']}, which is not "
                         "a region of its image")
    return parent.get("label") or "object"


def _as_stuff(cands: list[Mask], merge: bool) -> list[Mask]:
    """Whole masks whose label names stuff marked "stuff"; with ``merge``, those of one label made one mask
    (their union, as the best-scoring one), in the place of the first: a detector's several sky boxes are one sky."""
    out: list[Mask] = []
    first: dict[str, int] = {}
    for m in cands:
        if m.granularity == "part" or not is_stuff(m.label):
            out.append(m)
            continue
        m = replace(m, granularity="stuff")
        key = m.label.strip().lower()
        if merge and key in first:
            held = out[first[key]]
            best = m if m.score > held.score else held
            out[first[key]] = replace(best, rle=masks.union([held.rle, m.rle]))
        else:
            first[key] = len(out)
            out.append(m)
    return out


def _nms_order(cands: list[Mask], nms_iou: float) -> list[int]:
    return masks.nms([m.rle for m in cands], [m.score for m in cands], nms_iou)


def _record(region_id: int, rle: masks.Rle, m: Mask) -> dict:
    return {
        "region_id": region_id,
        "segmentation": rle,
        "bbox": masks.bbox(rle),
        "area": masks.area(rle),
        "label": m.label,
        "label_score": float(m.score if m.label_score is None else m.label_score),
        "source": m.source,
        "granularity": m.granularity,
        "parent_id": None,
        "predicted_iou": m.predicted_iou,
        "stability_score": m.stability_score,
        "text": m.text,
    }


def _quality_ok(m: Mask, min_predicted_iou: float, min_stability: float) -> bool:
    """Low-quality removal (SAM's own estimates); masks without an estimate pass."""
    return (m.predicted_iou is None or m.predicted_iou >= min_predicted_iou) and (
        m.stability_score is None or m.stability_score >= min_stability
    )


def nest_given(given: list[Mask], min_containment: float) -> list[Mask]:
    """Given masks with those lying (at least ``min_containment``) inside a larger given mask marked as
    parts: a source's nested annotations (SA-1B's whole, part and subpart masks) become part links."""
    if len(given) < 2:
        return list(given)
    areas = [masks.area(m.rle) for m in given]
    overlap = masks.intersection_areas([m.rle for m in given], [m.rle for m in given])
    out = []
    for i, m in enumerate(given):
        inside = any(j != i and areas[j] > areas[i] and overlap[i, j] >= min_containment * areas[i]
                     for j in range(len(given)))
        out.append(replace(m, granularity="part") if inside and areas[i] else m)
    return out


def resolve_entities(
    prompted: list[Mask],
    generated: list[Mask],
    height: int,
    width: int,
    *,
    given: list[Mask] = (),
    min_area_frac: float,
    nms_iou: float,
    max_regions: int,
    min_keep_frac: float = 0.5,
    min_predicted_iou: float = 0.0,
    min_stability: float = 0.0,
    max_parts: int = 0,
    part_min_containment: float = 0.8,
) -> list[dict]:
    """Region records (schema.REGION), region_id = acceptance order: entities, then their parts.

    Entities never overlap. NMS within each source list; then the masks the source came with
    (``given``, by area, desc), prompted masks by score (desc) and generated object/stuff masks by
    area (desc), ties by index, each minus everything accepted before it: given masks win, the
    segmenters only add what lies outside them. Masks labelled with a ``STUFF`` name are "stuff", the
    prompted ones of one label merged first (``_as_stuff``). A remainder is dropped when it is under
    ``min_area_frac`` of the image or under ``min_keep_frac`` of its own mask (mostly covered by a
    better candidate, e.g. a generated segment under a detection). Masks whose predicted IoU or
    stability is below the minimum go first.

    Part-level masks (granularity "part", given ones first; up to ``max_parts``; 0 keeps none) are
    linked to the entity that holds at least ``part_min_containment`` of them (``parent_id``), clipped
    to it, and resolved the same way among the parts of that entity: parts never overlap each other,
    only their parent.
    """
    for m in (*given, *prompted, *generated):
        if list(m.rle["size"]) != [height, width]:
            raise ValueError(f"{m.source} mask of size {m.rle['size']} in a {height}x{width} image")
    given = _as_stuff([m for m in given if _quality_ok(m, min_predicted_iou, min_stability)], merge=False)
    prompted = _as_stuff([m for m in prompted if _quality_ok(m, min_predicted_iou, min_stability)], merge=True)
    generated = _as_stuff([m for m in generated if _quality_ok(m, min_predicted_iou, min_stability)], merge=False)
    parts = [m for m in (*given, *generated) if m.granularity == "part"]

    queue = _by_area([m for m in given if m.granularity != "part"], nms_iou)
    areas_p = [masks.area(m.rle) for m in prompted]
    kept_p = sorted(_nms_order(prompted, nms_iou), key=lambda i: (-prompted[i].score, i))
    queue += [(prompted[i], areas_p[i]) for i in kept_p]
    queue += _by_area([m for m in generated if m.granularity != "part"], nms_iou)

    min_area = min_area_frac * height * width
    regions: list[dict] = []
    _accept(queue, masks.empty(height, width), regions, min_area, min_keep_frac, max_regions, parent=None)
    if max_parts > 0 and parts and regions:
        _link_parts(parts, regions, nms_iou, min_area, min_keep_frac, max_parts, part_min_containment)
    return regions


def _by_area(wholes: list[Mask], nms_iou: float) -> list[tuple[Mask, int]]:
    """(mask, area) of the masks NMS keeps, largest first, ties by index."""
    areas = [masks.area(m.rle) for m in wholes]
    return [(wholes[i], areas[i]) for i in sorted(_nms_order(wholes, nms_iou), key=lambda i: (-areas[i], i))]


def _accept(queue, taken, regions, min_area, min_keep_frac, limit, parent) -> int:
    """Append each candidate's remainder outside ``taken`` to ``regions``; returns how many were added."""
    added = 0
    for cand, own_area in queue:
        if added >= limit:
            break
        if own_area == 0:
            continue
        rest = masks.subtract(cand.rle, taken)
        rest_area = masks.area(rest)
        if rest_area < min_area or rest_area < min_keep_frac * own_area:
            continue
        record = _record(len(regions), rest, cand)
        if parent is not None:
            record["parent_id"], record["granularity"] = parent, "part"
        regions.append(record)
        taken = masks.union([taken, rest])
        added += 1
    return added


def _link_parts(parts, regions, nms_iou, min_area, min_keep_frac, max_parts, min_containment) -> None:
    entities = list(regions)
    kept = _nms_order(parts, nms_iou)
    overlap = masks.intersection_areas([parts[i].rle for i in kept], [e["segmentation"] for e in entities])
    by_parent: dict[int, list[tuple[Mask, int]]] = {}
    for row, i in enumerate(kept):
        own = masks.area(parts[i].rle)
        best = int(np.argmax(overlap[row]))
        if own and overlap[row, best] >= min_containment * own:
            clipped = masks.intersection(parts[i].rle, entities[best]["segmentation"])
            by_parent.setdefault(best, []).append((replace(parts[i], rle=clipped, granularity="part"),
                                                   masks.area(clipped)))
    budget = max_parts
    for parent in sorted(by_parent):
        queue = sorted(by_parent[parent], key=lambda c: -c[1])
        h, w = entities[parent]["segmentation"]["size"]
        budget -= _accept(queue, masks.empty(h, w), regions, min_area, min_keep_frac, budget, parent=parent)
        if budget <= 0:
            break
