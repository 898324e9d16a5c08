"""Stage ``segment``: box-prompted masks for the detections, a concept segmenter's masks of every
instance of each tag (SAM 3, ``segment.concept``) and "everything" masks, resolved into non-overlapping
entity regions and their parts (``annotators.entities``; stuff tags such as sky or road become "stuff"
entities there); then regions no detector named get a name from a crop tagger (PancapEngine's per-crop
tags), when one is set, and a region it names as stuff is a stuff entity too.

Masks the source came with (SA-1B, COCO: ``given`` in the ingest parts) go first under
``segment.given``: ``use`` takes them instead of the segmenters, ``merge`` lets the segmenters add
what lies outside them, ``ignore`` segments as if there were none. An image whose source had no
annotations is segmented as always."""

from __future__ import annotations

from groundcap import schema
from groundcap.annotators.base import Detection, Mask
from groundcap.annotators.entities import is_stuff, nest_given, resolve_entities
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Enum, Fraction, Int, StrList
from groundcap.pipeline.stage import MapStage, Row
from groundcap.stages.common import make_backend, provenance, spec

ENTITY_OPTIONS = ("min_area_frac", "nms_iou", "max_regions", "min_predicted_iou", "min_stability", "max_parts",
                  "part_min_containment")


class SegmentStage(MapStage):
    name = "segment"
    inputs = ("ingest", "tag")
    columns = {"ingest": ("bytes", "given")}
    param_keys = ("segment", "tag")  # the crop tagger takes its options from the tag section
    steps = ("prompted_segmenter", "concept_segmenter", "mask_generator", "tagger")
    schema = schema.REGIONS
    param_types = {"segment": {
        "work_side": Int(1),
        "prompted": Backend("prompted_segmenter", nullable=True),
        "concept": Backend("concept_segmenter", nullable=True),
        "everything": Backend("mask_generator"),
        "min_area_frac": Fraction(),
        "nms_iou": Fraction(),
        "max_regions": Int(1),
        "min_predicted_iou": Fraction(),
        "min_stability": Fraction(),
        "max_parts": Int(0),
        "part_min_containment": Fraction(),
        "crop_tagger": Backend("tagger", nullable=True, options_in="tag"),
        "crop_tag_min_score": Fraction(),
        "generic_labels": StrList(),
        "given": Enum("use", "merge", "ignore"),
    }}

    def check_params(self, params, problems):
        """Detectors' boxes need a prompted segmenter: without one they would be dropped unsegmented."""
        segment, tag = params.get("segment"), params.get("tag")
        if isinstance(segment, dict) and isinstance(tag, dict) and segment.get("prompted") is None and tag.get(
                "detectors"):
            problems.append("params: segment.prompted is null but tag.detectors find boxes to segment; name a "
                            "prompted segmenter, or set tag.detectors to [] (segment.concept segments the tags)")

    def backends(self, params):
        section = params["segment"]
        shared = {"work_side": section["work_side"]}
        return [*([spec("prompted_segmenter", section["prompted"], section, shared)] if section["prompted"] else []),
                *([spec("concept_segmenter", section["concept"], section)] if section["concept"] else []),
                spec("mask_generator", section["everything"], section, shared),
                *([spec("tagger", section["crop_tagger"], params["tag"])] if section["crop_tagger"] else [])]

    def setup(self, params):
        self.section = params["segment"]
        built = {s.step: make_backend(s) for s in self.backends(params)}
        self.prompted, self.concept = built.get("prompted_segmenter"), built.get("concept_segmenter")
        self.generator, self.crop_tagger = built["mask_generator"], built.get("tagger")
        self.stamps = [provenance(b, self.section) for b in built.values()]
        self.generic = set(self.section["generic_labels"])

    def process(self, image_row: Row, tag_row: Row) -> Row:
        section = self.section
        image = decode_rgb(image_row["bytes"])
        given = given_masks(image_row.get("given"), section)
        prompted_masks, generated = [], []
        if given is None or section["given"] == "merge":
            detections = [Detection(**{**d, "bbox": tuple(d["bbox"])}) for d in tag_row["detections"]]
            if detections:
                prompted_masks = [m for m in self.prompted.segment(image, detections) if m is not None]
            if self.concept:
                prompted_masks += self.concept.segment(image, [t["label"] for t in tag_row["tags"]])
            generated = self.generator.generate(image)
        regions = resolve_entities(prompted_masks, generated, image.shape[0], image.shape[1], given=given or [],
                                   **{k: section[k] for k in ENTITY_OPTIONS})
        unnamed = [r for r in regions if (r["label"] or "") in self.generic]
        if self.crop_tagger and unnamed:
            crop_tags = self.crop_tagger.tag_crops(image, [tuple(r["bbox"]) for r in unnamed])
            for region, tags in zip(unnamed, crop_tags, strict=True):
                best = max(tags, key=lambda t: t.score, default=None)
                if best is not None and best.score >= section["crop_tag_min_score"]:
                    region["label"], region["label_score"] = best.label, best.score
                    if region["granularity"] != "part" and is_stuff(best.label):
                        region["granularity"] = "stuff"  # a crop named "sky" is stuff, as a detector's sky box is
        return {"image_id": image_row["image_id"], "regions": regions, "provenance": self.stamps, "error": None}


def given_masks(rows: list[dict] | None, section: dict) -> list[Mask] | None:
    """The masks the source gave this image (``segment.given``: use | merge), nested ones marked as
    parts; None when there are none to use (the source has no annotations, or ``given: ignore``).
    Their regions' ``source`` is ``given:<source kind>`` (given:coco, given:sa1b)."""
    if rows is None or section["given"] == "ignore":
        return None
    found = [Mask(g["segmentation"], g["label"] or "", 1.0, f"given:{g['source']}",
                  predicted_iou=g["predicted_iou"], stability_score=g["stability_score"]) for g in rows]
    return nest_given(found, section["part_min_containment"])


STAGE = SegmentStage()
