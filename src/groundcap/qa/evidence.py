"""Each claim a caption makes (``qa.claims``) judged against the region's pixels and the annotations.

Verdicts are ``schema.CLAIM`` dicts: supported, contradicted, or unverifiable when the evidence
cannot settle the claim (no image for colours, no OCR text for a quote, no region with the counted
label). Only contradictions count against a caption; labels are never judged, since the regions'
labels are where captions get their nouns.

Rules, in the caption's own terms:

- colour: the word's share of the mask's pixels (``colors.color_shares``) is at least
  ``min_color_share``; a stated "(63%)" must be within ``share_tolerance`` instead. A shade word
  ("navy blue", "crimson", ``colors.shades``) is held to its own Lab colour: the pixels within
  CIEDE2000 ``shade_tolerance`` of it must cover ``min_color_share``, so "navy" on a light-blue region
  is contradicted although both are blue. A colour word no list places ("wine-colored") is unverifiable.
- position: every side named is where the mask centroid's 3x3 cell is (the cell the embedded
  captioners name), or where at least half the box lies along that axis (the named third), so a
  large region said to be "on the left" by a model looking at its extent is not contradicted.
- area: "covering N% of" is within ``share_tolerance`` of the mask's share of the image.
- count: "three cats" against the regions whose label singularises to "cat" ("regions" against all
  of them). Regions labelled that way but a different number: contradicted; none so labelled:
  unverifiable, since regions rarely label everything in an image. A vague quantity ("several
  cats") names no number: unverifiable.
- text: a quote against the region's OCR text, ``claims.text_similarity`` >= ``min_text_similarity``.
- material: pixels cannot tell wood from plastic painted like it: always unverifiable, never guessed.
- relation (scene captions): "left of" / "right of" / "above" (and "on top of", "over") / "below"
  (and "under") hold when the subject's mask centroid is on that side of the object's, or its box
  reaches further that way (the composers' geometry implies the first); otherwise contradicted.
  Relations the masks cannot settle (behind, in front of, on, next to, within, holding, ...) are
  unverifiable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import cached_property

import numpy as np

from groundcap import colors, grounding, masks
from groundcap.qa import claims, vocabulary
from groundcap.qa.claims import Claim
from groundcap.wording import centroid, pct, position_name

_THIRDS = {"top": 0, "middle": 1, "bottom": 2, "left": 0, "center": 1, "right": 2}


@dataclass(frozen=True)
class Options:
    min_color_share: float = 0.05
    share_tolerance: float = 0.02
    min_text_similarity: float = 0.8
    shade_tolerance: float = 20.0  # CIEDE2000 distance within which a pixel has the named shade

    @classmethod
    def from_params(cls, section: dict) -> Options:
        """From params ``qa.evidence`` (its ``action`` is QA's business, not the checks')."""
        return cls(**{f.name: float(section[f.name]) for f in fields(cls) if f.name in section})


class _Region:
    """What the judges measure of one region, each measured once and only when a claim needs it."""

    def __init__(self, image: np.ndarray | None, region: dict, regions: list[dict], options: Options):
        self.image, self.region, self.regions, self.options = image, region, regions, options

    @cached_property
    def pixels(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        mask = masks.decode(self.region["segmentation"])
        return *np.nonzero(mask), *mask.shape

    @cached_property
    def shares(self) -> dict[str, float]:
        ys, xs, _, _ = self.pixels
        return dict(colors.color_shares(self.image[ys, xs]))


def _color(claim: Claim, r: _Region) -> tuple[str, str]:
    if r.image is None:
        return "unverifiable", "no image to measure colours in"
    name, stated, shade = claim.value
    if name is None:
        return "unverifiable", f"{claim.text!r} names a colour no colour list places"
    if shade is not None and stated is None:
        ys, xs, _, _ = r.pixels
        share = colors.shade_share(r.image[ys, xs], shade, r.options.shade_tolerance)
        ok = share >= r.options.min_color_share
        return ("supported" if ok else "contradicted"), (f"{pct(share)} of the region is within "
                                                         f"{r.options.shade_tolerance:g} (CIEDE2000) of {shade}")
    share = r.shares.get(name, 0.0)
    ok = share >= r.options.min_color_share if stated is None else abs(stated - share) <= r.options.share_tolerance
    return ("supported" if ok else "contradicted"), f"{name} covers {pct(share)} of the region"


def _in_third(start: float, length: float, size: int, third: int) -> bool:
    """At least half of [start, start + length) lies in the given third of [0, size)."""
    lo, hi = third * size / 3, (third + 1) * size / 3
    return length > 0 and max(0.0, min(start + length, hi) - max(start, lo)) >= length / 2


def _position(claim: Claim, r: _Region) -> tuple[str, str]:
    ys, xs, h, w = r.pixels
    cell = position_name(*centroid(ys, xs), w, h)
    at = claims.where(cell)
    at = (at[0] or "middle", at[1] or "center")  # a cell names both axes: "top" is the top middle
    x, y, bw, bh = r.region["bbox"]
    box = ((y, bh, h), (x, bw, w))
    said = f"its centre is in the {cell} of the image"
    if claims.compatible(claim.value, at):
        return "supported", said
    missed = [side for side, here, (start, length, size) in zip(claim.value, at, box, strict=True)
              if side is not None and side != here and not _in_third(start, length, size, _THIRDS[side])]
    if not missed:
        return "supported", f"{said}, but most of its box is in the named third"
    return "contradicted", f"{said} and most of its box is outside the {' and '.join(missed)} third"


def _area(claim: Claim, r: _Region) -> tuple[str, str]:
    ys, _, h, w = r.pixels
    frac = len(ys) / (h * w)
    ok = abs(claim.value - frac) <= r.options.share_tolerance
    return ("supported" if ok else "contradicted"), f"it covers {pct(frac)} of the image"


def _count(claim: Claim, r: _Region) -> tuple[str, str]:
    n, noun = claim.value
    if n is None:
        return "unverifiable", f"{claim.text!r} names no number"
    if noun == "region":
        found = len(r.regions)
        return ("supported" if found == n else "contradicted"), f"the image has {found} region{'s' * (found != 1)}"
    found = sum(claims.singular(x.get("label") or "") == noun for x in r.regions)
    if not found:
        return "unverifiable", f"no region is labelled {noun}"
    are = "regions are" if found != 1 else "region is"
    return ("supported" if found == n else "contradicted"), f"{found} {are} labelled {noun}"


def _text(claim: Claim, r: _Region) -> tuple[str, str]:
    ocr = r.region.get("text")
    if not ocr:
        return "unverifiable", "the region has no OCR text"
    similarity = claims.text_similarity(claim.value, ocr)
    ok = similarity >= r.options.min_text_similarity
    return ("supported" if ok else "contradicted"), f"its OCR text is {ocr!r} (similarity {similarity:.2f})"


def _material(claim: Claim, r: _Region) -> tuple[str, str]:
    return "unverifiable", f"pixels cannot tell what a region is made of ({claim.value})"


# a side of the image: (axis of the centroid and box, +1 when the subject lies towards larger coordinates)
_SIDES = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}


def _extent(region: dict) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None:
    """Mask centroid (x, y) and the box's spans along x and y; None for an empty mask."""
    ys, xs = np.nonzero(masks.decode(region["segmentation"]))
    if not len(ys):
        return None
    x, y, w, h = region["bbox"]
    return centroid(ys, xs), (x, x + w), (y, y + h)


def _relation(claim: Claim, r: _Region) -> tuple[str, str]:
    subject, relation, obj = claim.value
    if relation not in _SIDES:
        return "unverifiable", f"masks cannot tell whether one region is {relation} another"
    by_id = {x["region_id"]: x for x in r.regions}
    a, b = _extent(by_id[subject]), _extent(by_id[obj])
    if a is None or b is None:
        return "unverifiable", "a region's mask is empty"
    axis, sign = _SIDES[relation]
    edge = 1 if sign > 0 else 0  # the box edge on the named side
    side = relation.removesuffix(" of")
    said = f"r{subject}'s centre is at {a[0][axis]:.0f} and r{obj}'s at {b[0][axis]:.0f} along {'xy'[axis]}"
    if sign * (a[0][axis] - b[0][axis]) > 0:
        return "supported", said
    if sign * (a[1 + axis][edge] - b[1 + axis][edge]) > 0:
        return "supported", f"{said}, but r{subject}'s box reaches further {side}"
    return "contradicted", f"{said} and r{subject}'s box does not reach further {side}"


_JUDGES = {"color": _color, "material": _material, "position": _position, "area": _area, "count": _count,
           "text": _text, "relation": _relation}
_PIXEL_KINDS = ("color", "position", "area")


def _judge(found: list[Claim], r: _Region, prefix: str = "") -> list[dict]:
    out = []
    for claim in found:
        if claim.kind not in _JUDGES:
            continue
        if claim.kind in _PIXEL_KINDS and not len(r.pixels[0]):
            verdict, detail = "unverifiable", "the region's mask is empty"
        else:
            verdict, detail = _JUDGES[claim.kind](claim, r)
        out.append({"kind": claim.kind, "claim": prefix + claim.text, "verdict": verdict, "detail": detail})
    return out


class Measures:
    """An image's regions as the judges measure them: each region's pixels and colours once, however many
    captions make claims about it (its own caption, each reference to it in the scene caption)."""

    def __init__(self, image: np.ndarray | None, regions: list[dict], options: Options = Options()):
        self.image, self.regions, self.options = image, regions, options
        self._measured: dict[int, _Region] = {}

    def __call__(self, region: dict) -> _Region:
        if "region_id" not in region:  # the image as a whole (counts, relations): nothing of its own to measure
            return _Region(self.image, region, self.regions, self.options)
        found = self._measured.get(region["region_id"])
        if found is None or found.region is not region:
            found = self._measured[region["region_id"]] = _Region(self.image, region, self.regions, self.options)
        return found


def check_region(text: str, image: np.ndarray | None, region: dict, regions: list[dict],
                 options: Options = Options(), measures: Measures | None = None) -> list[dict]:
    """Verdicts on the claims of one region's caption; ``regions`` (all of the image's) settle counts.
    ``measures`` (of this image, regions and options) keeps what was measured for the image's other checks."""
    return _judge(claims.parse(text), (measures or Measures(image, regions, options))(region))


def check_scene(text: str, image: np.ndarray | None, regions: list[dict], options: Options = Options(),
                measures: Measures | None = None) -> list[dict]:
    """Verdicts on a grounded scene caption: the claims of each ``<rN>phrase</rN>``, with a position
    right after its closing tag (how the composers place it), against region N (claims say "rN: ...";
    unknown N is skipped: QA reports dangling references itself), then counts anywhere in the text
    against all regions, then relations between two references ("r1, r2: ..."). Colours and positions
    outside phrases are not about one region: not judged."""
    by_id = {r["region_id"]: r for r in regions}
    measure = measures or Measures(image, regions, options)
    out, offset = [], 0
    for rid, phrase in grounding.references(text):
        tag = f"<r{rid}>{phrase}</r{rid}>"  # as matched (grounding.ref refuses malformed nesting)
        offset = text.index(tag, offset) + len(tag)
        if rid not in by_id:
            continue
        found = [c for c in claims.parse(phrase) if c.kind != "count"]
        found += [c for c in [claims.leading_position(text[offset:])] if c]
        out += _judge(found, measure(by_id[rid]), prefix=f"r{rid}: ")
    counts = [c for c in claims.parse(grounding.plain(text)) if c.kind == "count"]
    out += _judge(counts, measure({}))
    for relation in claims.relations(text):
        subject, _, obj = relation.value
        if subject in by_id and obj in by_id:
            out += _judge([relation], measure({}), prefix=f"r{subject}, r{obj}: ")
    return list({(v["kind"], v["claim"]): v for v in out}.values())  # a region mentioned twice: once


def given_class(region: dict) -> str | None:
    """The class the region's source gave (COCO's category, a Hub dataset's label): a ``given:<kind>`` region's
    label, unless the segment stage's crop tagger named it (source ``given:<kind>+<tagger>``)."""
    source, label = region.get("source") or "", (region.get("label") or "").strip()
    return label if source.startswith("given:") and "+" not in source and label else None


_CLASS_FILLER = {"other", "merged", "stuff"}  # COCO panoptic's "wall-other-merged" is a wall


def check_class(text: str, region: dict) -> dict | None:
    """Whether a caption agrees with the class the region's source gave (DLC-SDP: the class is the region's
    name); None for a region without one. Supported when the caption names the class (the class, its head word,
    singular or plural, or one of ``vocabulary.CLASS_ALIASES``); contradicted when it names other labels of
    the vocabulary only (wider nouns, ``vocabulary.GENERIC_NOUNS``, do not count); else unverifiable."""
    given = given_class(region)
    if given is None:
        return None
    words = [w for w in re.split(r"[\s_-]+", given.casefold()) if w and w not in _CLASS_FILLER] or [given.casefold()]
    names = {" ".join(words), words[-1], *vocabulary.CLASS_ALIASES.get(" ".join(words), ())}
    said = {claims.singular(w) for w in re.findall(r"[a-z]+", text.casefold())}
    verdict = {"kind": "label", "claim": given, "verdict": "supported", "detail": f"the source's class is {given!r}"}
    if any(claims.singular(n) in said if " " not in n else re.search(rf"\b{re.escape(n)}", text, re.I)
           for n in names):
        return verdict
    others = [c for c in claims.parse(text) if c.kind == "label" and c.value not in vocabulary.GENERIC_NOUNS
              and c.value not in words]
    if not others:
        return verdict | {"verdict": "unverifiable", "detail": f"the caption names no class; the source's is {given!r}"}
    return verdict | {"claim": others[0].text, "verdict": "contradicted", "detail": f"the source's class is {given!r}"}


def explain(verdict: dict) -> str:
    """One verdict in words: "says 'red' but red covers 1% of the region"."""
    return f"says {verdict['claim']!r} but {verdict['detail']}"


def contradicted(verdicts: list[dict]) -> list[str]:
    """QA reasons for the contradicted verdicts, each once."""
    return list(dict.fromkeys(f"evidence: {explain(v)}" for v in verdicts if v["verdict"] == "contradicted"))
