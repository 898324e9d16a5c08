"""Stage ``redact``: the privacy pass before release, as SA-1B did: faces and licence plates blurred in
the image bytes the release holds.

Only the released bytes change: every other stage decodes ingest's original pixels, so masks, captions
and QA describe the image as it was. The detectors (``redact.detectors``) are prompted with the labels
of ``release.redact`` (``privacy.TARGETS``; Haar's cascades name their own) and every box they return is
grown by ``redact.pad_frac`` and blurred (``privacy.released``: PNG, ICC profile kept). Every other image
is stripped of its metadata (EXIF, XMP, IPTC, comments: ``privacy.strip_metadata``), whatever
``release.redact`` says, its encoded pixels untouched; its id stays ingest's. A row holds the bytes to
release (blurred or stripped), or null bytes where ingest's carry nothing to strip: build then takes
them as they are. An image whose detection failed keeps its error, and build refuses to release it.
"""

from __future__ import annotations

from groundcap import privacy, schema
from groundcap.annotators.base import Tag
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Int, Num
from groundcap.pipeline.stage import MapStage, Records, Row
from groundcap.stages.common import make_backend, provenance, spec


class RedactStage(MapStage):
    name = "redact"
    inputs = ("ingest",)
    columns = {"ingest": ("bytes", "format")}
    param_keys = ("redact", "release.redact")
    steps = ("detector",)
    schema = schema.REDACT
    param_types = {"redact": {
        "detectors": Backend("detector", many=True),
        "pad_frac": Num(0, 1),
        "cells": Int(1),
    }}

    def check_params(self, params, problems):
        """Something to detect whenever something is to be redacted."""
        release, section = params.get("release"), params.get("redact")
        if isinstance(release, dict) and isinstance(section, dict) and release.get("redact") not in (None, "none") \
                and section.get("detectors") == []:
            problems.append(f"params: release.redact is {release['redact']!r} but redact.detectors is empty; name a "
                            "detector (e.g. [haar]) or set release.redact: none")

    def backends(self, params):
        if params["release"]["redact"] == "none":
            return []
        section = params["redact"]
        return [spec("detector", name, section) for name in section["detectors"]]

    def setup(self, params):
        self.section = params["redact"]
        self.detectors = [make_backend(s) for s in self.backends(params)]
        self.stamps = [provenance(d, self.section) for d in self.detectors]
        self.prompts = [Tag(label, 1.0, self.name) for label in privacy.TARGETS[params["release"]["redact"]]]

    def process_batch(self, batch: list[Records]) -> list[Row]:
        rows = [image_row for image_row, in batch]
        images = [decode_rgb(r["bytes"]) for r in rows] if self.detectors else [None] * len(rows)
        per_detector = [d.detect_batch(images, [self.prompts] * len(images)) for d in self.detectors]
        out = []
        for i, (row, image) in enumerate(zip(rows, images, strict=True)):
            redactions = []
            for found in per_detector:
                for det in found[i]:
                    if box := privacy.pixel_box(det.bbox, self.section["pad_frac"], image.shape[1], image.shape[0]):
                        redactions.append({"label": det.label, "score": float(det.score),
                                           "bbox": [float(v) for v in box], "detector": det.source})
            out.append(self._row(row, image, redactions))
        return out

    def _row(self, ingested: Row, image, redactions: list[dict]) -> Row:
        """The bytes to release: blurred where something was found, else stripped (null: ingest's are clean)."""
        boxes = [tuple(int(v) for v in r["bbox"]) for r in redactions]
        data, fmt = privacy.released(ingested["bytes"], ingested["format"], boxes, self.section["cells"], image) \
            or (None, None)
        return {"image_id": ingested["image_id"], "bytes": data, "format": fmt, "redactions": redactions,
                "provenance": self.stamps, "error": None}


STAGE = RedactStage()
