"""Verifier "pixel_claims": checks what a caption says against the region's pixels (CPU, no model).

It reads the claims it can measure from any captioner's text: colour words (each must cover at
least ``min_color_share`` of the region; a stated "(63%)" must be within ``share_tolerance``),
position phrases ("at the top left": the mask centroid's 3x3 cell must agree on every side the
phrase names) and "covering N%" (the mask's share of the image, within ``share_tolerance``).
Quoted text (OCR) is not read as a claim. A caption with no measurable claim is accepted and says so.
"""

from __future__ import annotations

import re

import numpy as np

from groundcap import masks
from groundcap.annotators import colors
from groundcap.annotators.base import RegionCaption, Verdict, Verifier
from groundcap.annotators.registry import register
from groundcap.annotators.wording import centroid, position_name

_COLOR = re.compile(r"\b(" + "|".join(colors.PROTOTYPES) + r")\b(?:\s*\((\d+)%\))?")
_POSITION = re.compile(r"\b(?:at|on|in) the (top left|top right|bottom left|bottom right|top|bottom|left|right|center)\b")
_COVERING = re.compile(r"\bcovering (\d+)% of\b")


def _sides(cell: str) -> set[str]:
    """The sides a position names: "top left" -> {top, left}; "center" -> {middle, center}."""
    return {"middle", "center"} if cell == "center" else set(cell.split())


def _measured_sides(cell: str) -> set[str]:
    sides = set(cell.split())
    if not sides & {"top", "bottom"}:
        sides.add("middle")
    if not sides & {"left", "right"}:
        sides.add("center")
    return sides


@register("verifier", "pixel_claims", needs=("skimage",), description="Checks a caption's colour, position and area claims against the mask's pixels")
class PixelClaimsVerifier(Verifier):
    model = "measured claims (CIE Lab colour shares, mask centroid, mask area)"
    defaults = {"min_color_share": 0.05, "share_tolerance": 0.02}

    def verify(self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption]) -> list[Verdict]:
        by_id = {r["region_id"]: r for r in regions}
        return [self._one(image, by_id[c.region_id], c) for c in captions]

    def _one(self, image: np.ndarray, region: dict, caption: RegionCaption) -> Verdict:
        mask = masks.decode(region["segmentation"])
        ys, xs = np.nonzero(mask)
        h, w = mask.shape
        text = re.sub(r'"[^"]*"', " ", f"{caption.short}. {caption.detailed}").lower()
        shares = dict(colors.color_shares(image[ys, xs]))
        problems, checked = [], []

        for match in _COLOR.finditer(text):
            name, stated = match.group(1), match.group(2)
            share = shares.get(name, 0.0)
            checked.append(name)
            if share < self.min_color_share:
                problems.append(f"says {name!r} but {name} covers {share:.0%} of the region")
            elif stated is not None and abs(int(stated) / 100 - share) > self.share_tolerance:
                problems.append(f"says {name} covers {stated}% but it covers {share:.0%}")

        cell = position_name(*centroid(ys, xs), w, h)
        for match in _POSITION.finditer(text):
            checked.append(match.group(0))
            if not _sides(match.group(1)) <= _measured_sides(cell):
                problems.append(f"says {match.group(0)!r} but the region's centre is in the {cell} of the image")

        area_frac = len(ys) / (h * w)
        for match in _COVERING.finditer(text):
            checked.append(match.group(0))
            if abs(int(match.group(1)) / 100 - area_frac) > self.share_tolerance:
                problems.append(f"says it covers {match.group(1)}% but it covers {area_frac:.0%} of the image")

        if problems:
            return Verdict(caption.region_id, False, "; ".join(dict.fromkeys(problems)))
        return Verdict(caption.region_id, True, f"checked {len(checked)} claims" if checked else "no measurable claims")
