"""RegionCaptioner "hsv_sketch": a second, independent embedded captioner for the crosscheck stage.

It shares no measurement with "attributes", so agreement between the two is evidence, not an echo:
colours come from a hue/saturation/value histogram with its own bins (not nearest CIE Lab
prototypes), position from the bounding-box centre (not the mask centroid) and size from the box's
share of the image (not the mask's). It names colours with the words of ``colors.NAMES`` so the two
captioners' colour claims can be compared. It takes the region's label as given and reads no text.
"""

from __future__ import annotations

import cv2
import numpy as np

from groundcap import colors, masks
from groundcap.annotators.base import RegionCaption, RegionCaptioner
from groundcap.annotators.entities import parent_name
from groundcap.annotators.registry import register
from groundcap.wording import POSITION_PHRASES, article, join_words, pct, position_name

# Histogram bins. Hue in degrees: the bin edges are where one colour word gives way to the next.
HUE_EDGES = (0, 15, 40, 70, 165, 195, 255, 300, 345, 360)
HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "red")
SAT_EDGES = (0.0, 0.15, 0.4, 1.0)  # gray | pale | vivid
VAL_EDGES = (0.0, 0.2, 0.4, 0.65, 0.8, 1.0)  # black | dark | dim | light | bright


def _cell_name(hue: str, sat: int, val: int) -> str:
    """The colour word of one histogram cell (bin indices ``sat`` and ``val``).

    Too dark is black and too unsaturated is gray or white whatever the hue; dark warm hues are
    brown, pale light warm hues beige (orange, yellow) or pink (red), dark pink reads as purple.
    """
    if val == 0:
        return "black"
    if sat == 0:
        return "white" if val == 4 else "gray"
    if (hue in ("red", "orange", "yellow") and val == 1) or (hue == "orange" and val == 2):
        return "brown"
    if sat == 1 and ((hue == "orange" and val >= 3) or (hue == "yellow" and val == 4)):
        return "beige"
    if hue == "red" and sat == 1 and val >= 3:
        return "pink"
    if hue == "pink" and val <= 2:
        return "purple"
    return hue


CELL_NAMES = np.array(
    [[[_cell_name(h, s, v) for v in range(len(VAL_EDGES) - 1)] for s in range(len(SAT_EDGES) - 1)] for h in HUES]
)


def hsv_shares(pixels_rgb: np.ndarray) -> list[tuple[str, float]]:
    """(name, fraction of pixels) from the HSV histogram of a regular-stride sample, largest first."""
    pixels = colors.sample(pixels_rgb)
    if len(pixels) == 0:
        return []
    rgb = (pixels.astype(np.float32) / 255.0).reshape(-1, 1, 3)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).reshape(-1, 3)  # float input: H in [0, 360), S, V in [0, 1]
    counts, _ = np.histogramdd(hsv, bins=(HUE_EDGES, SAT_EDGES, VAL_EDGES))
    names = np.unique(CELL_NAMES)
    totals = [float(counts[CELL_NAMES == n].sum()) / len(pixels) for n in names]
    return sorted(((str(n), t) for n, t in zip(names, totals, strict=True) if t > 0), key=lambda s: (-s[1], s[0]))


@register("region_captioner", "hsv_sketch", needs=("cv2",),
          description="HSV histogram colours, box position and size: a second opinion for crosscheck")
class HsvSketchCaptioner(RegionCaptioner):
    """Colours covering >= ``color_min_share`` of the mask (at most 2 in the short caption, 3 in the
    detailed one; "multicolored" when none does); position: 3x3 cell of the box centre; size: box
    area / image area < ``small_max`` small, < ``large_min`` medium, else large (a box holds more
    than its mask, so these sit above "attributes"' mask-area thresholds)."""

    model = "HSV histogram colour names, bounding-box position and size (no learned model)"
    defaults = {"color_min_share": 0.15, "small_max": 0.1, "large_min": 0.4}

    def caption(self, image: np.ndarray, regions: list[dict]) -> list[RegionCaption]:
        return [self._caption(image, region, parent_name(region, regions)) for region in regions]

    def _caption(self, image: np.ndarray, region: dict, parent: str | None) -> RegionCaption:
        mask = masks.decode(region["segmentation"])
        if not mask.any():
            raise ValueError(f"region {region.get('region_id')} has an empty mask")
        h, w = mask.shape
        x, y, bw, bh = region["bbox"]
        box_frac = round(bw * bh / (w * h), 4)
        stated = [(n, round(s, 3)) for n, s in hsv_shares(image[mask]) if s >= self.color_min_share][:3]
        facts = {
            "label": region.get("label") or "region",
            "colors": [[n, s] for n, s in stated],
            "position": position_name(x + bw / 2, y + bh / 2, w, h),
            "box_frac": box_frac,
            "size": "small" if box_frac < self.small_max else "medium" if box_frac < self.large_min else "large",
            **({"part_of": parent} if parent is not None else {}),  # a part's captions say whose part it is
        }
        return RegionCaption(int(region["region_id"]), self.short(facts), self.detailed(facts), facts)

    @staticmethod
    def _adjective(facts: dict, n: int) -> str:
        return join_words([name for name, _ in facts["colors"][:n]]) if facts["colors"] else "multicolored"

    def short(self, facts: dict) -> str:
        adj, label = self._adjective(facts, 2), facts["label"]
        whose = f" of the {facts['part_of']}" if facts.get("part_of") else ""
        return f"{adj} text{whose}" if label == "text" else f"{article(adj)} {adj} {label}{whose}"

    def detailed(self, facts: dict) -> str:
        head = f"{facts['size']} {self._adjective(facts, 3)} {facts['label']}"
        head = head if facts["label"] == "text" else f"{article(head)} {head}"
        if facts.get("part_of"):
            head += f" of the {facts['part_of']}"
        where = POSITION_PHRASES[facts["position"]]
        text = f"{head[0].upper()}{head[1:]} {where}, its box spanning {pct(facts['box_frac'])} of the image."
        named = [n for n, _ in facts["colors"]]
        if named and facts["colors"][0][1] >= 0.5:
            rest = f", with some {join_words(named[1:])}" if len(named) > 1 else ""
            text += f" It is mostly {named[0]}{rest}."
        return text
