"""Stage ``caption_regions``: a short and a detailed caption for every entity region, made to single
out its region (``annotators.uniqueness``: judged by meaning, with ``unique_embedder``), then checked by a
second opinion (``verifier``).

Rejected captions stay in the table with the verifier's reason; QA leaves their regions out.
"""

from __future__ import annotations

import json

from groundcap import schema
from groundcap.annotators.base import RegionCaption, Verdict
from groundcap.annotators.uniqueness import make_unique
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Enum, Fraction, Int
from groundcap.pipeline.stage import MapStage, Records, Row
from groundcap.qa import consistency
from groundcap.stages.common import make_backend, provenance, spec


class CaptionRegionsStage(MapStage):
    name = "caption_regions"
    inputs = ("ingest", "segment")
    columns = {"ingest": ("bytes",)}
    param_keys = ("caption_regions",)
    steps = ("region_captioner", "verifier")
    schema = schema.CAPTIONS
    param_types = {"caption_regions": {
        "captioner": Backend("region_captioner"),
        "verifier": Backend("verifier", nullable=True),
        "unique_rounds": Int(0),
        "unique_max_similarity": Fraction(),
        "unique_embedder": Enum(*sorted(consistency.MODELS)),
    }}

    def backends(self, params):
        section = params["caption_regions"]
        return [spec("region_captioner", section["captioner"], section),
                *([spec("verifier", section["verifier"], section)] if section["verifier"] else [])]

    def setup(self, params):
        self.section = params["caption_regions"]
        self.captioner, *verifier = (make_backend(s) for s in self.backends(params))
        self.verifier = verifier[0] if verifier else None
        self.embedder = consistency.embedder(self.section["unique_embedder"])
        self.stamps = [provenance(b, self.section) for b in (self.captioner, *verifier, self.embedder)]

    def process_batch(self, batch: list[Records]) -> list[Row]:
        """All first captions of the batch in one call, then uniqueness image by image, then all verdicts."""
        captioner = self.captioner
        todo = [i for i, (_, region_row) in enumerate(batch) if region_row["regions"]]
        images = {i: decode_rgb(batch[i][0]["bytes"]) for i in todo}
        regions = {i: batch[i][1]["regions"] for i in todo}
        firsts = captioner.caption_batch([(images[i], regions[i]) for i in todo])
        captions, clashes = {}, {}
        for i, first in zip(todo, firsts, strict=True):
            first = _in_step(captioner.name, first, regions[i])
            unique, clashes[i] = make_unique(captioner, images[i], regions[i], first,
                                             rounds=self.section["unique_rounds"],
                                             max_similarity=self.section["unique_max_similarity"],
                                             embedder=self.embedder)
            captions[i] = _in_step(captioner.name, unique, regions[i])
        verdicts = dict(zip(todo, _verify(self.verifier, [(images[i], regions[i], captions[i]) for i in todo]),
                            strict=True))
        return [{"image_id": image_row["image_id"],
                 "captions": [_row(c, v, c.region_id not in clashes[i])
                              for c, v in zip(captions[i], verdicts[i], strict=True)] if i in verdicts else [],
                 "provenance": self.stamps, "error": None}
                for i, (image_row, _) in enumerate(batch)]


def _verify(verifier, items: list[tuple]) -> list[list[Verdict | None]]:
    """The verifier's verdicts per (image, regions, captions); a caption the captioner could not write is
    rejected with its reason, without asking the verifier."""
    if verifier is None:
        return [[None] * len(captions) for _, _, captions in items]
    written = [[c for c in captions if c.short and c.detailed] for _, _, captions in items]
    asked = [i for i, w in enumerate(written) if w]
    answers = dict(zip(asked, verifier.verify_batch([(items[i][0], items[i][1], written[i]) for i in asked]),
                       strict=True))
    out = []
    for i, (_, _, captions) in enumerate(items):
        verdicts = dict(zip((c.region_id for c in written[i]), answers.get(i, []), strict=True))
        out.append([verdicts.get(c.region_id) or Verdict(c.region_id, False, c.facts.get("error") or "no caption")
                    for c in captions])
    return out


def _in_step(name: str, captions: list[RegionCaption], regions: list[dict]) -> list[RegionCaption]:
    if [c.region_id for c in captions] != [r["region_id"] for r in regions]:
        raise RuntimeError(f"{name} returned captions out of step with the regions")
    return captions


def _row(c: RegionCaption, verdict: Verdict | None, unique: bool) -> dict:
    return {
        "region_id": c.region_id,
        "short": c.short,
        "detailed": c.detailed,
        "facts": json.dumps(c.facts, sort_keys=True, default=float),
        "verdict": "unverified" if verdict is None else "accepted" if verdict.accepted else "rejected",
        "verdict_reason": None if verdict is None else verdict.reason,
        "unique": unique,
    }


STAGE = CaptionRegionsStage()
