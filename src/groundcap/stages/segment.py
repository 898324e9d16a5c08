"""Stage ``segment``: box-prompted masks for the detections, a concept segmenter's masks of every
instance of each tag (SAM 3, ``segment.concept``) and "everything" masks, resolved into non-overlapping
entity regions and their parts (``annotators.entities``; a mask labelled as stuff, such as sky or road,
becomes a "stuff" entity there, whichever backend or crop tag named it).

The crop loop (PancapEngine): with a crop tagger set, every class-agnostic mask (an "everything" or
given mask with a generic label) is cropped and tagged, all crops of a batch in one tagger call, and
takes its best tag as its name (its source then says so: ``felzenszwalb+palette``, ``given:sa1b+vlm``);
with ``crop_prompts``, the crop tags the image's own tags lack prompt the tag stage's detectors (their
boxes segmented by the prompted segmenter) and the concept segmenter, so what a crop showed is also
found where no class-agnostic mask caught it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from groundcap import masks, schema
from groundcap.annotators.base import Detection, Mask, Tag
from groundcap.annotators.detections import merge
from groundcap.annotators.entities import nest_given, resolve_entities
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Bool, Enum, Fraction, Int, StrList
from groundcap.pipeline.stage import MapStage, Records, Row
from groundcap.stages.common import make_backend, provenance, spec

ENTITY_OPTIONS = ("min_area_frac", "nms_iou", "max_regions", "min_predicted_iou", "min_stability", "max_parts",
                  "part_min_containment")


class SegmentStage(MapStage):
    name = "segment"
    inputs = ("ingest", "tag")
    columns = {"ingest": ("bytes", "given")}
    param_keys = ("segment", "tag")  # the crop tagger and the loop's detectors take their options from the tag section
    steps = ("prompted_segmenter", "concept_segmenter", "mask_generator", "tagger", "detector")
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
        "crop_prompts": Bool(),
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
        if isinstance(segment, dict) and segment.get("crop_prompts") and not segment.get("crop_tagger"):
            problems.append("params: segment.crop_prompts needs segment.crop_tagger: without crop tags nothing prompts "
                            "the detectors")

    def backends(self, params):
        section = params["segment"]
        shared = {"work_side": section["work_side"]}
        return [*([spec("prompted_segmenter", section["prompted"], section, shared)] if section["prompted"] else []),
                *([spec("concept_segmenter", section["concept"], section)] if section["concept"] else []),
                spec("mask_generator", section["everything"], section, shared),
                *([spec("tagger", section["crop_tagger"], params["tag"])] if section["crop_tagger"] else []),
                *([spec("detector", name, params["tag"]) for name in params["tag"]["detectors"]]
                  if section["crop_prompts"] else [])]

    def setup(self, params):
        self.section, self.merge_iou = params["segment"], params["tag"]["merge_iou"]
        specs = self.backends(params)
        built = {s.step: make_backend(s) for s in specs if s.step != "detector"}
        self.detectors = [make_backend(s) for s in specs if s.step == "detector"]
        self.prompted, self.concept = built.get("prompted_segmenter"), built.get("concept_segmenter")
        self.generator, self.crop_tagger = built["mask_generator"], built.get("tagger")
        self.stamps = [provenance(b, self.section) for b in (*built.values(), *self.detectors)]
        self.generic = set(self.section["generic_labels"])

    def process(self, image_row: Row, tag_row: Row) -> Row:
        return self.process_batch([(image_row, tag_row)])[0]

    def process_batch(self, batch: list[Records]) -> list[Row]:
        found = [self._candidates(image_row, tag_row) for image_row, tag_row in batch]
        if self.crop_tagger:
            self._crop_loop(found)
        section = self.section
        return [{"image_id": f.image_id, "provenance": self.stamps, "error": None,
                 "regions": resolve_entities(f.prompted, f.generated, *f.image.shape[:2], given=f.given,
                                             **{k: section[k] for k in ENTITY_OPTIONS})} for f in found]

    def _candidates(self, image_row: Row, tag_row: Row) -> _Found:
        """One image's candidate masks before the crop loop: the given ones, and (unless the source's are used
        alone) the detections' and the tags' masks and the "everything" masks."""
        image = decode_rgb(image_row["bytes"])
        given = given_masks(image_row.get("given"), self.section)
        out = _Found(image_row["image_id"], image, given or [], {t["label"] for t in tag_row["tags"]})
        if given is None or self.section["given"] == "merge":
            out.segmenting = True
            detections = [Detection(**{**d, "bbox": tuple(d["bbox"])}) for d in tag_row["detections"]]
            out.prompted = self._masks(image, detections, [t["label"] for t in tag_row["tags"]])
            out.generated = self.generator.generate(image)
        return out

    def _masks(self, image: np.ndarray, detections: list[Detection], phrases: list[str]) -> list[Mask]:
        """The prompted segmenter's masks of ``detections`` and the concept segmenter's of ``phrases``."""
        out = [m for m in self.prompted.segment(image, detections) if m is not None] if detections else []
        return out + (self.concept.segment(image, phrases) if self.concept and phrases else [])

    def _crop_loop(self, found: list[_Found]) -> None:
        """Name each class-agnostic mask by its crop's best tag (one tagger call for the batch); with
        ``crop_prompts``, the crop tags an image's own tags lack prompt the detectors and the concept segmenter."""
        floor = self.section["crop_tag_min_score"]
        todo = [[(kind, k) for kind in ("given", "generated") for k, m in enumerate(getattr(f, kind))
                 if m.label in self.generic] for f in found]
        boxes = [[tuple(masks.bbox(getattr(f, kind)[k].rle)) for kind, k in ks] for f, ks in zip(found, todo,
                                                                                                   strict=True)]
        tagged = self.crop_tagger.tag_crops_batch([(f.image, b) for f, b in zip(found, boxes, strict=True)])
        for f, ks, per_crop in zip(found, todo, tagged, strict=True):
            for (kind, k), tags in zip(ks, per_crop, strict=True):
                kept = [t for t in tags if t.score >= floor and t.label not in self.generic]
                if kept:
                    best = max(kept, key=lambda t: t.score)
                    m = getattr(f, kind)[k]
                    getattr(f, kind)[k] = replace(m, label=best.label, label_score=best.score,
                                                  source=f"{m.source}+{self.crop_tagger.name}")
                for t in kept:
                    if t.label not in f.tags:
                        f.new.setdefault(t.label, t)
        if self.section["crop_prompts"]:
            self._prompt(found)

    def _prompt(self, found: list[_Found]) -> None:
        """Detections of each image's new crop tags (every detector over the batch, merged by IoU as the tag
        stage merges them) and their masks join its prompted masks; the source's masks used alone get none."""
        asked = [f for f in found if f.segmenting and f.new]
        tags = [list(f.new.values()) for f in asked]
        per_detector = [d.detect_batch([f.image for f in asked], tags) for d in self.detectors]
        for i, f in enumerate(asked):
            detections = merge([found_by[i] for found_by in per_detector], self.merge_iou)
            f.prompted += self._masks(f.image, detections, list(f.new))


@dataclass
class _Found:
    """One image's candidate masks on their way through the crop loop, and the tags it met."""

    image_id: str
    image: np.ndarray
    given: list[Mask]
    tags: set[str]  # the tag stage's labels of the image
    segmenting: bool = False  # the segmenters ran (not only the source's masks)
    prompted: list[Mask] = field(default_factory=list)
    generated: list[Mask] = field(default_factory=list)
    new: dict[str, Tag] = field(default_factory=dict)  # crop tags the image's tags lack, first seen first


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
