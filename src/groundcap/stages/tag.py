"""Stage ``tag``: image-level tags and labelled boxes (detectors are prompted with the tags).

Boxes of several detectors are merged by IoU, never suppressed across detectors
(``annotators.detections``). Tags that only the detectors found are added from their labels, so the
image's tag list always names what was detected, whichever backends ran.
"""

from __future__ import annotations

from dataclasses import asdict

from groundcap import schema
from groundcap.annotators.base import Tag
from groundcap.annotators.detections import merge
from groundcap.engine import Context, MapStage, map_stage
from groundcap.ingest import decode_rgb
from groundcap.stages.common import backend, provenance


def run(ctx: Context) -> None:
    map_stage(ctx, STAGE)


def setup(params: dict):
    section = params["tag"]
    taggers = [backend("tagger", name, section) for name in section["taggers"]]
    detectors = [backend("detector", name, section) for name in section["detectors"]]
    stamps = [provenance(b, section) for b in (*taggers, *detectors)]

    def tag_image(image_row: dict) -> dict:
        image = decode_rgb(image_row["bytes"])
        tags = [t for tagger in taggers for t in tagger.tag(image)]
        detections = merge([detector.detect(image, tags) for detector in detectors], section["merge_iou"])
        known = {t.label for t in tags}
        for det in sorted(detections, key=lambda d: -d.score):
            if det.label not in known:
                tags.append(Tag(det.label, det.score, det.source))
                known.add(det.label)
        return {
            "image_id": image_row["image_id"],
            "tags": [asdict(t) for t in tags],
            "detections": [asdict(d) | {"bbox": list(d.bbox)} for d in detections],
            "provenance": stamps,
            "error": None,
        }

    def failed(image_id: str, message: str) -> dict:
        return {"image_id": image_id, "tags": [], "detections": [], "provenance": stamps, "error": message}

    return tag_image, failed


STAGE = MapStage("tag", ("ingest",), schema.TAGS, setup)
