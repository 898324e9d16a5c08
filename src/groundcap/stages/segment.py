"""Stage ``segment``: box-prompted masks for the detections plus "everything" masks, resolved into
non-overlapping entity regions and their parts (``annotators.entities``); then regions no detector
named get a name from a crop tagger (PancapEngine's per-crop tags), when one is set."""

from __future__ import annotations

from groundcap import schema
from groundcap.annotators.base import Detection
from groundcap.annotators.entities import resolve_entities
from groundcap.engine import Context, MapStage, map_stage
from groundcap.ingest import decode_rgb
from groundcap.stages.common import backend, provenance

ENTITY_OPTIONS = ("min_area_frac", "nms_iou", "max_regions", "min_predicted_iou", "min_stability", "max_parts",
                  "part_min_containment")


def run(ctx: Context) -> None:
    map_stage(ctx, STAGE)


def setup(params: dict):
    section = params["segment"]
    shared = {"work_side": section["work_side"]}
    prompted = backend("prompted_segmenter", section["prompted"], section, shared)
    generator = backend("mask_generator", section["everything"], section, shared)
    crop_tagger = backend("tagger", section["crop_tagger"], params["tag"]) if section["crop_tagger"] else None
    stamps = [provenance(b, section) for b in (prompted, generator, crop_tagger) if b is not None]
    generic = set(section["generic_labels"])

    def segment_image(image_row: dict, tag_row: dict) -> dict:
        image = decode_rgb(image_row["bytes"])
        detections = [Detection(**{**d, "bbox": tuple(d["bbox"])}) for d in tag_row["detections"]]
        prompted_masks = [m for m in prompted.segment(image, detections) if m is not None] if detections else []
        regions = resolve_entities(prompted_masks, generator.generate(image), image.shape[0], image.shape[1],
                                   **{k: section[k] for k in ENTITY_OPTIONS})
        unnamed = [r for r in regions if (r["label"] or "") in generic]
        if crop_tagger and unnamed:
            crop_tags = crop_tagger.tag_crops(image, [tuple(r["bbox"]) for r in unnamed])
            for region, tags in zip(unnamed, crop_tags, strict=True):
                best = max(tags, key=lambda t: t.score, default=None)
                if best is not None and best.score >= section["crop_tag_min_score"]:
                    region["label"], region["label_score"] = best.label, best.score
        return {"image_id": image_row["image_id"], "regions": regions, "provenance": stamps, "error": None}

    def failed(image_id: str, message: str) -> dict:
        return {"image_id": image_id, "regions": [], "provenance": stamps, "error": message}

    return segment_image, failed


STAGE = MapStage("segment", ("ingest", "tag"), schema.REGIONS, setup)
