"""Stage ``qa``: per-region and per-image verdicts (``work/qa``) and the summary ``reports/qa.json``.

Regions that fail are left out of the release; references to them in the scene caption are unwrapped
to plain text so the caption never points at a missing region. Images that fail, or that a stage
failed on, are left out with their reasons.
"""

from __future__ import annotations

import json
from collections import Counter

from groundcap import grounding, parts, schema
from groundcap.engine import Context, map_images
from groundcap.qa.checks import check_image, check_region
from groundcap.stages import STAGES


def run(ctx: Context) -> None:
    section = ctx.params["qa"]

    def judge(image_row: dict, region_row: dict, caption_row: dict, scene_row: dict) -> dict:
        h, w = image_row["height"], image_row["width"]
        captions = {c["region_id"]: c for c in caption_row["captions"]}
        region_verdicts = []
        for region in region_row["regions"]:
            v = check_region(region, captions.get(region["region_id"]), h, w, section["min_region_area_frac"],
                             section["require_unique_captions"])
            region_verdicts.append({"region_id": region["region_id"], "score": v.score, "passed": v.passed,
                                    "reasons": v.reasons})
        failed_ids = {r["region_id"] for r in region_verdicts if not r["passed"]}
        for region, verdict in zip(region_row["regions"], region_verdicts):
            if region["parent_id"] is not None and region["parent_id"] in failed_ids:  # a part never outlives its entity
                verdict["passed"] = False
                verdict["reasons"] = [*verdict["reasons"], "parent region failed"]
        kept = {r["region_id"] for r in region_verdicts if r["passed"]}
        every = {r["region_id"] for r in region_verdicts}
        image = check_image(scene_row["scene_caption"], kept, every, section["min_regions"])
        region_mean = sum(r["score"] for r in region_verdicts) / len(region_verdicts) if region_verdicts else 0.0
        return {
            "image_id": image_row["image_id"],
            "score": round(image.score * region_mean, 4),
            "passed": image.passed,
            "reasons": image.reasons,
            "regions": region_verdicts,
            "scene_caption": grounding.unwrap(scene_row["scene_caption"] or "", kept),
        }

    def failed(image_id: str, message: str) -> dict:
        return {"image_id": image_id, "score": 0.0, "passed": False, "reasons": [message], "regions": [],
                "scene_caption": None}

    out = map_images(ctx, "qa", ["ingest", "segment", "caption_regions", "caption_scene"], judge, schema.QA, failed)
    summary = summarize(parts.read_part(out, i, ["passed", "reasons", "regions"]) for i in parts.list_parts(out))
    ctx.reports.mkdir(parents=True, exist_ok=True)
    (ctx.reports / "qa.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def summarize(part_rows) -> dict:
    images = Counter()
    regions = Counter()
    image_reasons: Counter = Counter()
    region_reasons: Counter = Counter()
    for rows in part_rows:
        for row in rows:
            images["passed" if row["passed"] else "failed"] += 1
            image_reasons.update(_reason_kind(r) for r in row["reasons"])
            for region in row["regions"]:
                regions["passed" if region["passed"] else "failed"] += 1
                region_reasons.update(region["reasons"])
    return {
        "images": {"passed": images["passed"], "failed": images["failed"]},
        "regions": {"passed": regions["passed"], "failed": regions["failed"]},
        "image_failure_reasons": dict(sorted(image_reasons.items())),
        "region_failure_reasons": dict(sorted(region_reasons.items())),
    }


def _reason_kind(reason: str) -> str:
    """Stage errors carry a per-image message; the summary counts them by stage."""
    stage, sep, _ = reason.partition(": ")
    return f"{stage} error" if sep and stage in STAGES else reason
