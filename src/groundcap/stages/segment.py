"""Stage ``segment``: box-prompted masks for the detections plus "everything" masks, resolved into
non-overlapping entity regions (``annotators.entities``)."""

from __future__ import annotations

from groundcap import schema
from groundcap.annotators.base import Detection
from groundcap.annotators.entities import resolve_entities
from groundcap.engine import Context, map_images
from groundcap.ingest import decode_rgb
from groundcap.stages.common import backend, provenance


def run(ctx: Context) -> None:
    section = ctx.params["segment"]
    shared = {"work_side": section["work_side"]}
    prompted = backend("prompted_segmenter", section["prompted"], section, shared)
    generator = backend("mask_generator", section["everything"], section, shared)
    stamps = [provenance(prompted, section), provenance(generator, section)]

    def segment_image(image_row: dict, tag_row: dict) -> dict:
        image = decode_rgb(image_row["bytes"])
        detections = [Detection(**{**d, "bbox": tuple(d["bbox"])}) for d in tag_row["detections"]]
        prompted_masks = [m for m in prompted.segment(image, detections) if m is not None] if detections else []
        regions = resolve_entities(
            prompted_masks,
            generator.generate(image),
            image.shape[0],
            image.shape[1],
            min_area_frac=section["min_area_frac"],
            nms_iou=section["nms_iou"],
            max_regions=section["max_regions"],
        )
        return {"image_id": image_row["image_id"], "regions": regions, "provenance": stamps, "error": None}

    def failed(image_id: str, message: str) -> dict:
        return {"image_id": image_id, "regions": [], "provenance": stamps, "error": message}

    map_images(ctx, "segment", ["ingest", "tag"], segment_image, schema.REGIONS, failed)
