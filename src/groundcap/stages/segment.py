"""Stage ``segment``: box-prompted masks for the detections plus "everything" masks, resolved into
non-overlapping entity regions and their parts (``annotators.entities``); then regions no detector
named get a name from a crop tagger (PancapEngine's per-crop tags), when one is set."""

from __future__ import annotations

from groundcap import schema
from groundcap.annotators.base import Detection
from groundcap.annotators.entities import resolve_entities
from groundcap.ingest import decode_rgb
from groundcap.stage import MapStage, Row
from groundcap.stages.common import build, provenance, spec

ENTITY_OPTIONS = ("min_area_frac", "nms_iou", "max_regions", "min_predicted_iou", "min_stability", "max_parts",
                  "part_min_containment")


class SegmentStage(MapStage):
    name = "segment"
    help = "Box-prompted masks plus everything-mode masks, merged into non-overlapping entity regions."
    inputs = ("ingest", "tag")
    params = ("segment", "tag")  # the crop tagger takes its options from the tag section
    steps = ("prompted_segmenter", "mask_generator", "tagger")
    schema = schema.REGIONS

    def backends(self, params):
        section = params["segment"]
        shared = {"work_side": section["work_side"]}
        return [spec("prompted_segmenter", section["prompted"], section, shared),
                spec("mask_generator", section["everything"], section, shared),
                *([spec("tagger", section["crop_tagger"], params["tag"])] if section["crop_tagger"] else [])]

    def setup(self, params):
        self.section = params["segment"]
        prompted, generator, *crop_tagger = (build(s) for s in self.backends(params))
        self.prompted, self.generator = prompted, generator
        self.crop_tagger = crop_tagger[0] if crop_tagger else None
        self.stamps = [provenance(b, self.section) for b in (prompted, generator, *crop_tagger)]
        self.generic = set(self.section["generic_labels"])

    def process(self, image_row: Row, tag_row: Row) -> Row:
        section = self.section
        image = decode_rgb(image_row["bytes"])
        detections = [Detection(**{**d, "bbox": tuple(d["bbox"])}) for d in tag_row["detections"]]
        prompted_masks = [m for m in self.prompted.segment(image, detections) if m is not None] if detections else []
        regions = resolve_entities(prompted_masks, self.generator.generate(image), image.shape[0], image.shape[1],
                                   **{k: section[k] for k in ENTITY_OPTIONS})
        unnamed = [r for r in regions if (r["label"] or "") in self.generic]
        if self.crop_tagger and unnamed:
            crop_tags = self.crop_tagger.tag_crops(image, [tuple(r["bbox"]) for r in unnamed])
            for region, tags in zip(unnamed, crop_tags, strict=True):
                best = max(tags, key=lambda t: t.score, default=None)
                if best is not None and best.score >= section["crop_tag_min_score"]:
                    region["label"], region["label_score"] = best.label, best.score
        return {"image_id": image_row["image_id"], "regions": regions, "provenance": self.stamps, "error": None}


STAGE = SegmentStage()
