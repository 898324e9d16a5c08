"""Stage ``caption_regions``: a short and a detailed caption for every entity region."""

from __future__ import annotations

import json

from groundcap import schema
from groundcap.engine import Context, map_images
from groundcap.ingest import decode_rgb
from groundcap.stages.common import backend, provenance


def run(ctx: Context) -> None:
    section = ctx.params["caption_regions"]
    captioner = backend("region_captioner", section["captioner"], section)
    stamp = provenance(captioner, section)

    def caption_image(image_row: dict, region_row: dict) -> dict:
        regions = region_row["regions"]
        captions = captioner.caption(decode_rgb(image_row["bytes"]), regions) if regions else []
        if [c.region_id for c in captions] != [r["region_id"] for r in regions]:
            raise RuntimeError(f"{captioner.name} returned captions out of step with the regions")
        return {
            "image_id": image_row["image_id"],
            "captions": [
                {"region_id": c.region_id, "short": c.short, "detailed": c.detailed,
                 "facts": json.dumps(c.facts, sort_keys=True, default=float)}
                for c in captions
            ],
            "provenance": stamp,
            "error": None,
        }

    def failed(image_id: str, message: str) -> dict:
        return {"image_id": image_id, "captions": [], "provenance": stamp, "error": message}

    map_images(ctx, "caption_regions", ["ingest", "segment"], caption_image, schema.CAPTIONS, failed)
