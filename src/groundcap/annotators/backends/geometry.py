"""SceneCaptioner "geometry": one grounded scene caption from measured global state and geometry.

The caption says what the whole image measures (brightness, colourfulness, colours, orientation,
region count), names the chosen regions as ``<rN>phrase</rN>`` with where they are, and states one
relation per region computed from boxes and mask centroids.
"""

from __future__ import annotations

import numpy as np

from groundcap import colors, grounding, masks
from groundcap.annotators import divide
from groundcap.annotators.base import RegionCaption, SceneCaption, SceneCaptioner
from groundcap.annotators.registry import register
from groundcap.wording import POSITION_PHRASES, article, centroid, join_words, pct, position_name

# Hasler & Suesstrunk (2003) colourfulness M: the paper's category levels, lowest first
COLORFULNESS = ((0, "muted"), (15, "slightly colorful"), (33, "moderately colorful"), (45, "averagely colorful"),
                (59, "quite colorful"), (82, "highly colorful"), (109, "extremely colorful"))


def colorfulness(pixels_rgb: np.ndarray) -> float:
    """Hasler-Suesstrunk M = std(rg, yb) + 0.3 mean(rg, yb), rg = R-G, yb = (R+G)/2 - B."""
    p = np.asarray(pixels_rgb, dtype=np.float64).reshape(-1, 3)
    rg, yb = p[:, 0] - p[:, 1], 0.5 * (p[:, 0] + p[:, 1]) - p[:, 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def measure_scene(image: np.ndarray, color_min_share: float = 0.15) -> dict:
    """Global facts of the image, from a regular-stride sample of its pixels."""
    h, w = image.shape[:2]
    pixels = colors.sample(image.reshape(-1, 3))
    lightness = float(colors.to_lab(pixels)[:, 0].mean())
    m = colorfulness(pixels)
    ratio = w / h
    return {
        "mean_lightness": round(lightness, 1),
        "brightness": "dark" if lightness < 35 else "bright" if lightness > 65 else "moderately bright",
        "colorfulness": round(m, 1),
        "colorfulness_level": [name for level, name in COLORFULNESS if m >= level][-1],
        "orientation": "landscape" if ratio > 1.05 else "portrait" if ratio < 1 / 1.05 else "square",
        "colors": [[n, round(s, 3)] for n, s in colors.color_shares(pixels) if s >= color_min_share][:3],
    }


def relation(a: dict, b: dict, width: int, height: int, next_to_frac: float = 0.1) -> str:
    """How region ``a`` sits relative to ``b`` (each with "bbox" [x,y,w,h] and "centroid" (x,y)).

    Box containment (>= 90% of a box inside the other) gives "within" / "around"; boxes apart give
    the direction of the larger gap; overlapping boxes give the dominant centroid offset, or "next
    to" when the centroids are closer than ``next_to_frac`` of the image on both axes.
    """
    ax, ay, aw, ah = a["bbox"]
    bx, by, bw, bh = b["bbox"]
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    if aw * ah > 0 and ix * iy >= 0.9 * aw * ah:
        return "within"
    if bw * bh > 0 and ix * iy >= 0.9 * bw * bh:
        return "around"
    dx, dy = a["centroid"][0] - b["centroid"][0], a["centroid"][1] - b["centroid"][1]
    gap_x = max(bx - (ax + aw), ax - (bx + bw))
    gap_y = max(by - (ay + ah), ay - (by + bh))
    if max(gap_x, gap_y) > 0:
        horizontal = gap_x >= gap_y
    elif abs(dx) < next_to_frac * width and abs(dy) < next_to_frac * height:
        return "next to"
    else:
        horizontal = abs(dx) / width >= abs(dy) / height
    if horizontal:
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


_SAYS = {"left of": "is to the left of", "right of": "is to the right of", "above": "is above", "below": "is below",
         "within": "lies within", "next to": "is next to"}


def _box_gap(a: dict, b: dict) -> float:
    ax, ay, aw, ah = a["bbox"]
    bx, by, bw, bh = b["bbox"]
    return float(np.hypot(max(0.0, bx - ax - aw, ax - bx - bw), max(0.0, by - ay - ah, ay - by - bh)))


def _distance(a: dict, b: dict) -> float:
    return float(np.hypot(a["centroid"][0] - b["centroid"][0], a["centroid"][1] - b["centroid"][1]))


def _mention(region: dict, capital: bool = False) -> str:
    phrase = _definite(region["phrase"])
    return grounding.ref(region["id"], phrase[0].upper() + phrase[1:] if capital else phrase)


def _definite(phrase: str) -> str:
    for a in ("a ", "an "):
        if phrase.startswith(a):
            return "the " + phrase[len(a):]
    return phrase if phrase.startswith("the ") else "the " + phrase


@register("scene_captioner", "geometry", needs=("skimage",),
          description="Scene caption from measured global state and region geometry")
class GeometryComposer(SceneCaptioner):
    """Mentions up to ``max_regions`` regions (per part, see ``compose``): labelled ones (a detector
    named them: label not in ``generic_labels``) by label score, then the rest by area; ties by
    region_id. Each mentioned
    region after the first gets one relation to the nearest region mentioned before it (box gap, then
    centroid distance)."""

    model = "geometric composition of measured facts"

    defaults = {"max_regions": 8, "divide_above": 0, "generic_labels": ["region"], "next_to_frac": 0.1,
                "color_min_share": 0.15}

    def choose(self, regions: list[dict]) -> list[dict]:
        named = [r for r in regions if r.get("label") and r["label"] not in self.generic_labels]
        rest = [r for r in regions if r not in named]
        named.sort(key=lambda r: (-(r.get("label_score") or 0.0), r["region_id"]))
        rest.sort(key=lambda r: (-int(r["area"]), r["region_id"]))
        return (named + rest)[: self.max_regions]

    def compose(self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption]) -> SceneCaption:
        """Global state, then the regions: all at once, or part by part when there are more than
        ``divide_above`` (``annotators.divide``), each part saying where it is."""
        h, w = image.shape[:2]
        sentences = [self._global(measure_scene(image, self.color_min_share), len(regions))]
        short = {c.region_id: c.short for c in captions}
        limit = self.divide_above if self.divide_above > 0 else len(regions)
        for part in divide.split(regions, w, h, limit):
            lead = "It shows" if part.name == "whole image" else f"In the {part.name} of the image, it shows"
            sentences += self._body(part.regions, short, w, h, lead)
        return SceneCaption(" ".join(sentences))

    def _body(self, regions: list[dict], short: dict[int, str], w: int, h: int, lead: str) -> list[str]:
        chosen = []
        for r in self.choose(regions):
            mask = masks.decode(r["segmentation"])
            if not mask.any():
                continue
            label = r.get("label") or "region"
            phrase = short.get(r["region_id"]) or f"{article(label)} {label}"
            phrase = phrase.replace("<", "").replace(">", "")  # OCR text must not forge a tag
            c = centroid(*np.nonzero(mask))
            chosen.append({"id": int(r["region_id"]), "phrase": phrase, "bbox": list(r["bbox"]), "centroid": c,
                           "where": POSITION_PHRASES[position_name(c[0], c[1], w, h)]})
        if not chosen:
            return []
        items = [f"{grounding.ref(c['id'], c['phrase'])} {c['where']}" for c in chosen]
        sentences = [f"{lead} {join_words(items)}."]
        for i, a in enumerate(chosen[1:], start=1):
            b = min(chosen[:i], key=lambda b: (_box_gap(a, b), _distance(a, b)))  # min keeps the first on ties
            rel = relation(a, b, w, h, self.next_to_frac)
            if rel == "around":  # say it from the contained region's side: "B lies within A"
                a, b, rel = b, a, "within"
            sentences.append(f"{_mention(a, capital=True)} {_SAYS[rel]} {_mention(b)}.")
        return sentences

    @staticmethod
    def _global(facts: dict, n_regions: int) -> str:
        head = f"{facts['brightness']}, {facts['colorfulness_level']} {facts['orientation']} image"
        text = f"{article(head).capitalize()} {head} with {n_regions} region{'' if n_regions == 1 else 's'}"
        named = [f"{n} ({pct(s)})" for n, s in facts["colors"]]
        if named:
            text += f"; its main color{'s are' if len(named) > 1 else ' is'} {join_words(named)}"
        return text + "."
