"""Stage ``crosscheck``: a second, independent model captions every region again, and each region's (and
the scene's) two captions are compared (``qa.consistency``): embedding similarity, claim agreement
and, when a ``judge`` verifier is set, that model's verdict on the first caption. QA decides on them.

The second scene caption is composed from the second captions by ``scene_composer``, with
caption_scene's ``max_regions`` and ``divide_above`` so both scene captions mention alike.
With ``captioner: null`` every row is empty and QA records no consistency decision.
"""

from __future__ import annotations

from groundcap import grounding, schema
from groundcap.annotators.base import RegionCaption
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Backend, Enum
from groundcap.pipeline.stage import MapStage, Records, Row
from groundcap.qa import claims, consistency
from groundcap.stages.common import make_backend, provenance, spec


class CrosscheckStage(MapStage):
    name = "crosscheck"
    inputs = ("ingest", "segment", "caption_regions", "caption_scene")
    columns = {"ingest": ("bytes",)}
    param_keys = ("crosscheck", "caption_scene.max_regions", "caption_scene.divide_above")
    steps = ("region_captioner", "scene_captioner", "verifier")
    schema = schema.CROSSCHECK
    param_types = {"crosscheck": {
        "captioner": Backend("region_captioner", nullable=True),
        "scene_composer": Backend("scene_captioner", nullable=True),
        "judge": Backend("verifier", nullable=True),
        "embedder": Enum(*sorted(consistency.MODELS)),
    }}

    def backends(self, params):
        section = params["crosscheck"]
        if not section["captioner"]:
            return []
        scene = params["caption_scene"]
        shared = {"max_regions": scene["max_regions"], "divide_above": scene["divide_above"]}
        return [spec("region_captioner", section["captioner"], section),
                *([spec("scene_captioner", section["scene_composer"], section, shared)]
                  if section["scene_composer"] else []),
                *([spec("verifier", section["judge"], section)] if section["judge"] else [])]

    def setup(self, params):
        section = params["crosscheck"]
        built = {s.step: make_backend(s) for s in self.backends(params)}
        self.captioner = built.get("region_captioner")
        self.composer, self.judge = built.get("scene_captioner"), built.get("verifier")
        self.embedder = consistency.embedder(section["embedder"]) if self.captioner else None
        self.stamps = [provenance(b, section) for b in (self.captioner, self.composer, self.judge, self.embedder)
                       if b is not None]

    def process_batch(self, batch: list[Records]) -> list[Row | Exception]:
        """The second captions, verdicts and scene captions of every image of the batch, one call per step."""
        if self.captioner is None:  # crosscheck off: every row empty, no consistency decision
            return [self.error_row(image_row["image_id"], None) for image_row, *_ in batch]
        rows: list[Row | Exception] = [self._empty(records) for records in batch]
        todo = [i for i, (_, region_row, _, _) in enumerate(batch) if region_row["regions"]]
        images = {i: decode_rgb(batch[i][0]["bytes"]) for i in todo}
        regions = {i: batch[i][1]["regions"] for i in todo}
        seconds = dict(zip(todo, self.captioner.caption_batch([(images[i], regions[i]) for i in todo]), strict=True))
        firsts, compared = {}, {}
        for i in todo:
            if [c.region_id for c in seconds[i]] != [r["region_id"] for r in regions[i]]:
                raise RuntimeError(f"{self.captioner.name} returned captions out of step with the regions")
            firsts[i] = {c["region_id"]: RegionCaption(c["region_id"], c["short"], c["detailed"])
                         for c in batch[i][2]["captions"] if c["short"] and c["detailed"]}
            compared[i] = [b for b in seconds[i] if b.region_id in firsts[i]]  # no first caption: nothing to compare
        judged = [i for i in todo if compared[i]] if self.judge is not None else []
        judging = [(images[i], regions[i], [firsts[i][b.region_id] for b in compared[i]]) for i in judged]
        verdicts = dict(zip(judged, self.judge.verify_batch(judging) if judged else [], strict=True))
        scened = [i for i in todo if self.composer is not None and batch[i][3]["scene_caption"]]
        scenes = dict(zip(scened, self.composer.compose_batch([(images[i], regions[i], seconds[i]) for i in scened])
                          if scened else [], strict=True))
        for i in todo:
            if isinstance(scenes.get(i), Exception):
                rows[i] = scenes[i]
            else:
                rows[i].update(self._compared(batch[i][3], regions[i], firsts[i], compared[i], verdicts.get(i, []),
                                              scenes.get(i)),
                               captions=[{"region_id": c.region_id, "short": c.short, "detailed": c.detailed}
                                         for c in seconds[i]])
        return rows

    def _empty(self, records: Records) -> Row:
        """The row of an image with no region to compare: both models named, nothing compared."""
        image_row, _, caption_row, _ = records
        model_a = caption_row["provenance"][0]["model"] if caption_row["provenance"] else None
        return {**self.error_row(image_row["image_id"], None), "model_a": model_a, "model_b": self.captioner.model}

    def _compared(self, scene_row: Row, regions, first, compared, verdicts, scene) -> Row:
        """Agreements per region (embedding, claims, the judge's verdict) and of the scene captions."""
        agreements = _compare(self.embedder, [(_text(first[b.region_id]), _text(b)) for b in compared])
        by_region = {b.region_id: a for b, a in zip(compared, agreements, strict=True)}
        for verdict in verdicts:
            by_region[verdict.region_id].update(judge="accepted" if verdict.accepted else "rejected",
                                                judge_reason=verdict.reason)
        out: Row = {"regions": [{"region_id": r["region_id"], "agreement": by_region.get(r["region_id"])}
                                for r in regions]}
        if scene is not None:
            out["scene_caption"] = scene.text
            # embedded apart: in one batch the long scene captions would pad every region caption to their length
            [out["scene"]] = _compare(self.embedder, [(grounding.plain(scene_row["scene_caption"]),
                                                       grounding.plain(scene.text))])
        return out


def _compare(embedder: consistency.Embedder, pairs: list[tuple[str, str]]) -> list[dict]:
    """schema.AGREEMENT records of text pairs, embedded in one batch."""
    similarity = embedder.similarity([a for a, _ in pairs], [b for _, b in pairs])
    return [consistency.compare(a, b, s) for (a, b), s in zip(pairs, similarity, strict=True)]


def _text(caption: RegionCaption) -> str:
    return claims.caption_text(caption.short, caption.detailed)


STAGE = CrosscheckStage()
