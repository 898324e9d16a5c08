"""Stage ``caption_scene``: one grounded scene caption per image, its phrases pointing at regions.

Composers get ``max_regions`` and ``divide_above`` (more regions than that: divide and conquer,
``annotators.divide``) from the section, whichever backend runs.
"""

from __future__ import annotations

import json

from groundcap import schema
from groundcap.annotators.base import RegionCaption
from groundcap.engine import Context, MapStage, map_stage
from groundcap.ingest import decode_rgb
from groundcap.stages.common import backend, provenance


def run(ctx: Context) -> None:
    map_stage(ctx, STAGE)


def setup(params: dict):
    section = params["caption_scene"]
    shared = {"max_regions": section["max_regions"], "divide_above": section["divide_above"]}
    composer = backend("scene_captioner", section["composer"], section, shared)
    stamp = [provenance(composer, section)]

    def compose_image(image_row: dict, region_row: dict, caption_row: dict) -> dict:
        captions = [
            RegionCaption(c["region_id"], c["short"], c["detailed"], json.loads(c["facts"]))
            for c in caption_row["captions"]
        ]
        scene = composer.compose(decode_rgb(image_row["bytes"]), region_row["regions"], captions)
        return {"image_id": image_row["image_id"], "scene_caption": scene.text, "provenance": stamp, "error": None}

    def failed(image_id: str, message: str) -> dict:
        return {"image_id": image_id, "scene_caption": None, "provenance": stamp, "error": message}

    return compose_image, failed


STAGE = MapStage("caption_scene", ("ingest", "segment", "caption_regions"), schema.SCENE, setup)
