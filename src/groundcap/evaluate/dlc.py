"""Region level, DLC-Bench-style details and URECA-style uniqueness of region captions.

DLC-Bench (Lian et al., "Describe Anything: Detailed Localized Image and Video Captioning", 2025)
scores a region description by questions, not text overlap: *positive* details the description should
state earn a point when stated, nothing when missing and lose one when stated wrongly; *negative*
details (plausible but wrong for that region) earn a point when left out and lose one when stated;
points count only when the description recognises the region. Here the questions come from the
release itself: a region's positives are the facts of its people-checked caption (label, colours,
position, text, counts), its negatives the labels, colours, positions and texts the image's other
regions have and it does not. A region is recognised when the caption states its label (for an
unlabelled region: any positive). Scores per region are means over its questions (in [-1, 1]);
``dlc`` is the mean of the positive and negative averages, as DLC-Bench reports.

Uniqueness (URECA, Lim et al. 2025: one region, one distinguishing caption) is the share of the
regions of multi-region images whose predicted caption fits their own reference description better
than any other region's (the judge's ``fit``); a region without a caption is not unique. The
reference captions' own uniqueness is reported beside it: it is what a perfect prediction reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from groundcap.evaluate import content
from groundcap.evaluate.content import Content, Fact
from groundcap.evaluate.inputs import Reference
from groundcap.evaluate.judges import Judge, Question
from groundcap.qa import claims


@dataclass(frozen=True)
class RegionScore:
    image_id: str
    region_id: int
    captioned: bool
    recognized: bool
    positive: float | None  # None: no positive question
    negative: float | None


def _differs(fact: Fact, own: list[Fact]) -> bool:
    """A fact of another region that would be wrong for this one (its own facts of that kind disagree)."""
    what, value = fact.value[0], fact.value[1]
    mine = [f.value[1] for f in own if f.value[0] == what]
    if what == "position":
        return bool(mine) and not any(claims.compatible(value, v) for v in mine)
    if what == "text":
        return not any(claims.text_similarity(value, v) >= claims.TEXT_SIMILARITY for v in mine)
    return what in ("label", "color", "material") and value not in mine


def questions(image: Reference) -> dict[int, tuple[list[Fact], list[Fact]]]:
    """``region_id -> (positive facts, negative facts)`` of one image's reference regions."""
    facts = {r.region_id: content.region(r.caption).facts for r in image.regions}
    out = {}
    for rid, own in facts.items():
        negatives: dict[tuple, Fact] = {}
        for other, theirs in facts.items():
            for fact in theirs:
                if other != rid and fact.value[0] != "count" and _differs(fact, own):
                    negatives.setdefault(fact.value, fact)
        out[rid] = (own, sorted(negatives.values(), key=lambda f: repr(f.value)))
    return out


Plan = list[tuple[str, int, bool, Content, list[Fact], list[Fact]]]  # image, region, captioned, caption, +, -


def plan(images: list[Reference], captions: dict[str, dict[int, str]]) -> Plan:
    """Every reference region with its predicted caption (missing: empty) and its questions."""
    out: Plan = []
    for image in images:
        predicted = captions.get(image.image_id, {})
        for rid, (pos, neg) in questions(image).items():
            text = predicted.get(rid, "")
            out.append((image.image_id, rid, bool(text.strip()), content.region(text), pos, neg))
    return out


def flat_questions(rows: Plan) -> list[Question]:
    return [Question(f, target, 0) for *_, target, pos, neg in rows for f in (*pos, *neg)]


def score(judge: Judge, images: list[Reference], captions: dict[str, dict[int, str]]) -> list[RegionScore]:
    """Scores of every reference region; ``captions[image_id][region_id]`` is the predicted caption
    (missing: empty)."""
    rows = plan(images, captions)
    flat = flat_questions(rows)
    verdicts = iter(judge.check(flat))
    out = []
    for image_id, rid, captioned, _, pos, neg in rows:
        pv = [next(verdicts) for _ in pos]
        nv = [next(verdicts) for _ in neg]
        labels = [v for f, v in zip(pos, pv, strict=True) if f.value[0] == "label"]
        recognized = any(v.stated for v in (labels or pv))
        positive = sum(1.0 if v.stated else -1.0 if v.contradicted else 0.0 for v in pv) / len(pv) if pv else None
        negative = sum(-1.0 if v.stated else 1.0 for v in nv) / len(nv) if nv else None
        if not recognized:
            positive, negative = (None if positive is None else 0.0), (None if negative is None else 0.0)
        out.append(RegionScore(image_id, rid, captioned, recognized, positive, negative))
    return out


def uniqueness(judge: Judge, images: list[Reference], captions: dict[str, dict[int, str]]) -> tuple[float | None, int]:
    """(share of regions whose caption singles them out, regions considered), over multi-region images."""
    items, own = [], []
    for image in images:
        if len(image.regions) < 2:
            continue
        candidates = [r.caption for r in image.regions]
        for i, region in enumerate(image.regions):
            items.append((captions.get(image.image_id, {}).get(region.region_id, ""), candidates))
            own.append(i)
    if not items:
        return None, 0
    picks = judge.fit(items)
    return sum(p == i for p, i in zip(picks, own, strict=True)) / len(items), len(items)


def summarize(regions: list[RegionScore]) -> dict:
    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 4) if values else None

    positive, negative = mean(r.positive for r in regions), mean(r.negative for r in regions)
    both = [v for v in (positive, negative) if v is not None]
    return {"regions": len(regions), "captioned": sum(r.captioned for r in regions),
            "recognized": mean(float(r.recognized) for r in regions),
            "positive": positive, "negative": negative,
            "dlc": round(sum(both) / len(both), 4) if both else None}
