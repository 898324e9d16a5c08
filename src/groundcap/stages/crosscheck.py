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
from groundcap.engine import Context, MapStage, map_stage
from groundcap.ingest import decode_rgb
from groundcap.qa import claims, consistency
from groundcap.stages.common import backend, provenance


def run(ctx: Context) -> None:
    map_stage(ctx, STAGE)


def setup(params: dict):
    section = params["crosscheck"]
    if not section["captioner"]:
        return lambda image_row, *_: _row(image_row["image_id"], []), lambda image_id, message: _row(
            image_id, [], error=message)
    captioner = backend("region_captioner", section["captioner"], section)
    composer = None
    if section["scene_composer"]:
        scene = params["caption_scene"]
        shared = {"max_regions": scene["max_regions"], "divide_above": scene["divide_above"]}
        composer = backend("scene_captioner", section["scene_composer"], section, shared)
    judge = backend("verifier", section["judge"], section) if section["judge"] else None
    embedder = consistency.embedder(section["embedder"])
    stamps = [provenance(b, section) for b in (captioner, composer, judge, embedder) if b is not None]

    def check_image(image_row: dict, region_row: dict, caption_row: dict, scene_row: dict) -> dict:
        regions = region_row["regions"]
        model_a = caption_row["provenance"][0]["model"] if caption_row["provenance"] else None
        row = _row(image_row["image_id"], stamps, model_a=model_a, model_b=captioner.model)
        if not regions:
            return row
        image = decode_rgb(image_row["bytes"])
        second = captioner.caption(image, regions)
        if [c.region_id for c in second] != [r["region_id"] for r in regions]:
            raise RuntimeError(f"{captioner.name} returned captions out of step with the regions")
        first = {c["region_id"]: RegionCaption(c["region_id"], c["short"], c["detailed"])
                 for c in caption_row["captions"] if c["short"] and c["detailed"]}
        compared = [b for b in second if b.region_id in first]  # a caption the first model could not write: none
        agreements = _compare(embedder, [(_text(first[b.region_id]), _text(b)) for b in compared])
        by_region = {b.region_id: a for b, a in zip(compared, agreements, strict=True)}
        if judge is not None and compared:
            for verdict in judge.verify(image, regions, [first[b.region_id] for b in compared]):
                by_region[verdict.region_id].update(judge="accepted" if verdict.accepted else "rejected",
                                                    judge_reason=verdict.reason)
        if composer is not None and scene_row["scene_caption"]:
            row["scene_caption"] = composer.compose(image, regions, second).text
            # embedded apart: in one batch the long scene captions would pad every region caption to their length
            [row["scene"]] = _compare(embedder, [(grounding.plain(scene_row["scene_caption"]),
                                                   grounding.plain(row["scene_caption"]))])
        row["captions"] = [{"region_id": c.region_id, "short": c.short, "detailed": c.detailed} for c in second]
        row["regions"] = [{"region_id": r["region_id"], "agreement": by_region.get(r["region_id"])} for r in regions]
        return row

    return check_image, lambda image_id, message: _row(image_id, stamps, error=message)


def _compare(embedder: consistency.Embedder, pairs: list[tuple[str, str]]) -> list[dict]:
    """schema.AGREEMENT records of text pairs, embedded in one batch."""
    similarity = embedder.similarity([a for a, _ in pairs], [b for _, b in pairs])
    return [consistency.compare(a, b, s) for (a, b), s in zip(pairs, similarity, strict=True)]


def _text(caption: RegionCaption) -> str:
    return claims.caption_text(caption.short, caption.detailed)


def _row(image_id: str, stamps: list[dict], model_a: str | None = None, model_b: str | None = None,
         error: str | None = None) -> dict:
    return {"image_id": image_id, "captions": [], "regions": [], "scene_caption": None, "scene": None,
            "model_a": model_a, "model_b": model_b, "provenance": stamps, "error": error}


STAGE = MapStage("crosscheck", ("ingest", "segment", "caption_regions", "caption_scene"), schema.CROSSCHECK, setup)
