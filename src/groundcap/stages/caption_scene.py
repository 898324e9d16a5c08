"""Stage ``caption_scene``: one grounded scene caption per image, its phrases pointing at regions.

Composers get ``max_regions`` and ``divide_above`` (more regions than that: divide and conquer,
``annotators.divide``) from the section, whichever backend runs.
"""

from __future__ import annotations

import json

from groundcap import schema
from groundcap.annotators.base import RegionCaption
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Int
from groundcap.pipeline.stage import MapStage, Records, Row
from groundcap.stages.common import make_backend, provenance, spec


class CaptionSceneStage(MapStage):
    name = "caption_scene"
    inputs = ("ingest", "segment", "caption_regions")
    columns = {"ingest": ("bytes",)}
    param_keys = ("caption_scene",)
    steps = ("scene_captioner",)
    schema = schema.SCENE
    param_types = {"caption_scene": {
        "composer": Backend("scene_captioner"),
        "max_regions": Int(1),
        "divide_above": Int(0),
    }}

    def backends(self, params):
        section = params["caption_scene"]
        shared = {"max_regions": section["max_regions"], "divide_above": section["divide_above"]}
        return [spec("scene_captioner", section["composer"], section, shared)]

    def setup(self, params):
        [self.composer] = (make_backend(s) for s in self.backends(params))
        self.stamps = [provenance(self.composer, params["caption_scene"])]

    def process_batch(self, batch: list[Records]) -> list[Row | Exception]:
        """Every image's scene requests go to the composer at once; an image it fails on gets its error."""
        scenes = self.composer.compose_batch([(decode_rgb(image_row["bytes"]), region_row["regions"],
                                               _captions(caption_row)) for image_row, region_row, caption_row in batch])
        return [scene if isinstance(scene, Exception) else
                {"image_id": image_row["image_id"], "scene_caption": scene.text, "provenance": self.stamps,
                 "error": None}
                for (image_row, _, _), scene in zip(batch, scenes, strict=True)]


def _captions(caption_row: Row) -> list[RegionCaption]:
    return [RegionCaption(c["region_id"], c["short"], c["detailed"], json.loads(c["facts"]))
            for c in caption_row["captions"]]


STAGE = CaptionSceneStage()
