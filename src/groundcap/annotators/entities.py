"""Entity merge: prompted and generated candidate masks -> non-overlapping region records.

Model-agnostic (works on ``Mask`` records from any backend) and done in RLE space. Prompted masks
come from a detector's box, so they carry a label and win; generated ("everything") masks fill in
what the detectors did not name.
"""

from __future__ import annotations

from groundcap import masks
from groundcap.annotators.base import Mask


def _nms_order(cands: list[Mask], nms_iou: float) -> list[int]:
    return masks.nms([m.rle for m in cands], [m.score for m in cands], nms_iou)


def _record(region_id: int, rle: masks.Rle, m: Mask) -> dict:
    return {
        "region_id": region_id,
        "segmentation": rle,
        "bbox": masks.bbox(rle),
        "area": masks.area(rle),
        "label": m.label,
        "label_score": float(m.score),
        "source": m.source,
        "granularity": m.granularity,
        "parent_id": None,
        "predicted_iou": m.predicted_iou,
        "stability_score": m.stability_score,
        "text": m.text,
    }


def resolve_entities(
    prompted: list[Mask],
    generated: list[Mask],
    height: int,
    width: int,
    *,
    min_area_frac: float,
    nms_iou: float,
    max_regions: int,
    min_keep_frac: float = 0.5,
) -> list[dict]:
    """Region records (schema.REGION) whose masks never overlap, region_id = acceptance order.

    NMS within each source list; then prompted masks by score (desc) and generated masks by area
    (desc), ties by index, each minus everything accepted before it. A remainder is dropped when it
    is under ``min_area_frac`` of the image or under ``min_keep_frac`` of its own mask (mostly
    covered by a better candidate, e.g. a generated segment under a detection).
    """
    for m in (*prompted, *generated):
        if list(m.rle["size"]) != [height, width]:
            raise ValueError(f"{m.source} mask of size {m.rle['size']} in a {height}x{width} image")
    areas_p = [masks.area(m.rle) for m in prompted]
    areas_g = [masks.area(m.rle) for m in generated]
    kept_p = sorted(_nms_order(prompted, nms_iou), key=lambda i: (-prompted[i].score, i))
    kept_g = sorted(_nms_order(generated, nms_iou), key=lambda i: (-areas_g[i], i))
    queue = [(prompted[i], areas_p[i]) for i in kept_p] + [(generated[i], areas_g[i]) for i in kept_g]

    min_area = min_area_frac * height * width
    taken = masks.empty(height, width)
    regions: list[dict] = []
    for cand, own_area in queue:
        if len(regions) >= max_regions:
            break
        if own_area == 0:
            continue
        rest = masks.subtract(cand.rle, taken)
        rest_area = masks.area(rest)
        if rest_area < min_area or rest_area < min_keep_frac * own_area:
            continue
        regions.append(_record(len(regions), rest, cand))
        taken = masks.union([taken, rest])
    return regions
