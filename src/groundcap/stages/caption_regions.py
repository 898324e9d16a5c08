"""Stage ``caption_regions``: a short and a detailed caption for every entity region, made to single
out its region (``annotators.uniqueness``), then checked by a second opinion (``verifier``).

Rejected captions stay in the table with the verifier's reason; QA leaves their regions out.
"""

from __future__ import annotations

import json

from groundcap import schema
from groundcap.annotators.base import RegionCaption, Verdict
from groundcap.annotators.uniqueness import make_unique
from groundcap.engine import Context, MapStage, map_stage
from groundcap.ingest import decode_rgb
from groundcap.stages.common import backend, provenance


def run(ctx: Context) -> None:
    map_stage(ctx, STAGE)


def setup(params: dict):
    section = params["caption_regions"]
    captioner = backend("region_captioner", section["captioner"], section)
    verifier = backend("verifier", section["verifier"], section) if section["verifier"] else None
    stamps = [provenance(b, section) for b in (captioner, verifier) if b is not None]

    def caption_image(image_row: dict, region_row: dict) -> dict:
        regions = region_row["regions"]
        if not regions:
            return {"image_id": image_row["image_id"], "captions": [], "provenance": stamps, "error": None}
        image = decode_rgb(image_row["bytes"])
        captions = _in_step(captioner.name, captioner.caption(image, regions), regions)
        captions, clashes = make_unique(captioner, image, regions, captions, rounds=section["unique_rounds"],
                                        max_similarity=section["unique_max_similarity"])
        captions = _in_step(captioner.name, captions, regions)
        verdicts = _verify(verifier, image, regions, captions)
        return {
            "image_id": image_row["image_id"],
            "captions": [_row(c, v, c.region_id not in clashes) for c, v in zip(captions, verdicts, strict=True)],
            "provenance": stamps,
            "error": None,
        }

    def failed(image_id: str, message: str) -> dict:
        return {"image_id": image_id, "captions": [], "provenance": stamps, "error": message}

    return caption_image, failed


def _verify(verifier, image, regions: list[dict], captions: list[RegionCaption]) -> list[Verdict | None]:
    """The verifier's verdicts; a caption the captioner could not write is rejected with its reason."""
    if verifier is None:
        return [None] * len(captions)
    written = [c for c in captions if c.short and c.detailed]
    verdicts = dict(zip((c.region_id for c in written), verifier.verify(image, regions, written) if written else [],
                        strict=True))
    return [verdicts.get(c.region_id) or Verdict(c.region_id, False, c.facts.get("error") or "no caption")
            for c in captions]


def _in_step(name: str, captions: list[RegionCaption], regions: list[dict]) -> list[RegionCaption]:
    if [c.region_id for c in captions] != [r["region_id"] for r in regions]:
        raise RuntimeError(f"{name} returned captions out of step with the regions")
    return captions


def _row(c: RegionCaption, verdict: Verdict | None, unique: bool) -> dict:
    return {
        "region_id": c.region_id,
        "short": c.short,
        "detailed": c.detailed,
        "facts": json.dumps(c.facts, sort_keys=True, default=float),
        "verdict": "unverified" if verdict is None else "accepted" if verdict.accepted else "rejected",
        "verdict_reason": None if verdict is None else verdict.reason,
        "unique": unique,
    }


STAGE = MapStage("caption_regions", ("ingest", "segment"), schema.CAPTIONS, setup)
