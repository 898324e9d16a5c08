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
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Fraction
from groundcap.pipeline.stage import MapStage, Records, Row
from groundcap.stages.common import make_backend, provenance, spec


class TagStage(MapStage):
    name = "tag"
    inputs = ("ingest",)
    columns = {"ingest": ("bytes",)}
    param_keys = ("tag",)
    steps = ("tagger", "detector")
    schema = schema.TAGS
    param_types = {"tag": {
        "taggers": Backend("tagger", many=True),
        "detectors": Backend("detector", many=True),
        "merge_iou": Fraction(),
    }}

    def backends(self, params):
        section = params["tag"]
        return ([spec("tagger", name, section) for name in section["taggers"]]
                + [spec("detector", name, section) for name in section["detectors"]])

    def setup(self, params):
        self.section = params["tag"]
        specs = self.backends(params)
        self.taggers = [make_backend(s) for s in specs if s.step == "tagger"]
        self.detectors = [make_backend(s) for s in specs if s.step == "detector"]
        self.stamps = [provenance(b, self.section) for b in (*self.taggers, *self.detectors)]

    def process_batch(self, batch: list[Records]) -> list[Row]:
        images = [decode_rgb(image_row["bytes"]) for image_row, in batch]
        per_tagger = [tagger.tag_batch(images) for tagger in self.taggers]  # [tagger][image]
        tags = [[t for tagged in per_tagger for t in tagged[i]] for i in range(len(images))]
        per_detector = [detector.detect_batch(images, tags) for detector in self.detectors]  # [detector][image]
        return [self._row(image_row["image_id"], tags[i], [found[i] for found in per_detector])
                for i, (image_row,) in enumerate(batch)]

    def _row(self, image_id: str, tags: list[Tag], per_detector: list) -> Row:
        detections = merge(per_detector, self.section["merge_iou"])
        known = {t.label for t in tags}
        for det in sorted(detections, key=lambda d: -d.score):
            if det.label not in known:
                tags.append(Tag(det.label, det.score, det.source))
                known.add(det.label)
        return {
            "image_id": image_id,
            "tags": [asdict(t) for t in tags],
            "detections": [asdict(d) | {"bbox": list(d.bbox)} for d in detections],
            "provenance": self.stamps,
            "error": None,
        }


STAGE = TagStage()
