"""RegionCaptioner "attributes": captions that state only what was measured in the region's pixels.

Every statement comes from a measurement kept in ``RegionCaption.facts`` (rounded as stated), so QA
can re-check each caption against its facts and the facts against the pixels.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from groundcap import colors, masks
from groundcap.annotators.base import RegionCaption, RegionCaptioner, at_work_side
from groundcap.annotators.entities import parent_name
from groundcap.annotators.registry import register
from groundcap.wording import POSITION_PHRASES, article, centroid, join_words, pct, position_name


def solidity(crop: np.ndarray) -> float:
    """Mask pixels / pixels of their convex hull (1.0 = convex)."""
    contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    filled = np.zeros(crop.shape, np.uint8)
    cv2.fillConvexPoly(filled, hull, 1)
    return min(1.0, np.count_nonzero(crop) / max(1, np.count_nonzero(filled)))


def gradient_map(image: np.ndarray, side: int) -> np.ndarray:
    """Sobel gradient magnitude of gray in [0, 1], per pixel, with the longest side at most ``side``.

    A fixed analysis size keeps texture values comparable across image resolutions.
    """
    gray, _ = at_work_side(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0, side)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8.0  # /8: a ramp of slope s reads as s
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.hypot(gx, gy)


@register("region_captioner", "attributes", needs=("cv2", "skimage"),
          description="Measured attributes: colour, size, position, shape, texture, OCR text")
class AttributeCaptioner(RegionCaptioner):
    """Short and detailed captions from measurements, with the thresholds below (all options).

    size: area fraction < ``small_max`` (0.05) small, < ``large_min`` (0.25) medium, else large.
    position: 3x3 grid cell of the mask centroid. aspect: bbox w/h >= ``wide_min`` (1.3) wide,
    <= 1/``wide_min`` tall, else square-ish. shape: solidity >= ``compact_min`` (0.8) compact, else
    irregular. texture: mean gradient magnitude inside the mask (``gradient_map``, boundary band
    eroded away) >= ``textured_min`` (0.03 gray levels/pixel) textured, else smooth. colours: named
    colours covering >= ``color_min_share`` (0.15), at most 3 in the detailed caption, 2 in the short.
    """

    model = "measured attributes (CIE Lab colour names, mask geometry, Sobel texture)"

    defaults = {
        "small_max": 0.05,
        "large_min": 0.25,
        "wide_min": 1.3,
        "compact_min": 0.8,
        "textured_min": 0.03,
        "color_min_share": 0.15,
        "analysis_side": 512,
    }

    def caption(self, image: np.ndarray, regions: list[dict]) -> list[RegionCaption]:
        grad = gradient_map(image, self.analysis_side)
        out = []
        for region in regions:
            facts = self.measure(image, masks.decode(region["segmentation"]), grad, region)
            if (parent := parent_name(region, regions)) is not None:
                facts["part_of"] = parent  # a part's captions say whose part it is
            out.append(RegionCaption(int(region["region_id"]), self.short(facts), self.detailed(facts), facts))
        return out

    # --- measuring -----------------------------------------------------------------------------

    def measure(self, image: np.ndarray, mask: np.ndarray, grad: np.ndarray, region: dict) -> dict:
        h, w = mask.shape
        ys, xs = np.nonzero(mask)
        area = len(ys)
        if area == 0:
            raise ValueError(f"region {region.get('region_id')} has an empty mask")
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = mask[y0:y1, x0:x1]

        shares = colors.color_shares(image[ys, xs])
        stated = [(n, round(s, 3)) for n, s in shares if s >= self.color_min_share][:3]
        multicolored = not stated
        if multicolored:
            stated = [(n, round(s, 3)) for n, s in shares[:3]]

        cx, cy = centroid(ys, xs)
        size_frac = round(area / (h * w), 4)
        aspect_ratio = round(float(x1 - x0) / float(y1 - y0), 2)
        sol = round(float(solidity(crop)), 3)
        gradient = round(self._mean_gradient(mask, crop, (y0, x0), grad), 4)
        return {  # plain Python types: stored as JSON
            "label": region.get("label") or "region",
            "colors": [[n, s] for n, s in stated],
            "multicolored": multicolored,
            "size_frac": size_frac,
            "size": "small" if size_frac < self.small_max else "medium" if size_frac < self.large_min else "large",
            "position": position_name(cx, cy, w, h),
            "centroid": [round(cx / w, 4), round(cy / h, 4)],
            "aspect_ratio": aspect_ratio,
            "aspect": ("wide" if aspect_ratio >= self.wide_min
                       else "tall" if aspect_ratio <= 1 / self.wide_min else "square-ish"),
            "solidity": sol,
            "shape": "compact" if sol >= self.compact_min else "irregular",
            "gradient": gradient,
            "texture": "textured" if gradient >= self.textured_min else "smooth",
            "text": region.get("text") or None,
        }

    @staticmethod
    def _mean_gradient(mask, crop, origin, grad) -> float:
        """Mean of ``grad`` over the mask's interior: the band where the region's own outline shows
        up in the gradient (two analysis pixels) is eroded away when enough is left."""
        h, w = mask.shape
        sy, sx = grad.shape[0] / h, grad.shape[1] / w
        r = int(np.ceil(2 / min(sy, sx)))
        inner = cv2.erode(np.pad(crop, r).astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8))[r:-r, r:-r]
        ys, xs = np.nonzero(inner if inner.any() else crop)
        ys, xs = ys + origin[0], xs + origin[1]
        gy = np.minimum((ys * sy).astype(int), grad.shape[0] - 1)
        gx = np.minimum((xs * sx).astype(int), grad.shape[1] - 1)
        return float(grad[gy, gx].mean())

    # --- wording ---------------------------------------------------------------------------------

    @staticmethod
    def _adjective(facts: dict, n: int) -> str:
        if facts["multicolored"]:
            return "multicolored"
        return join_words([name for name, _ in facts["colors"][:n]])

    # measured qualifiers a short caption gains, in this order, while it fits several regions
    QUALIFIERS = ("position", "size", "texture", "shape")

    def refine(self, image, regions, captions, clashes):
        out = []
        for c in captions:
            level = c.facts.get("qualifiers", 0)
            if c.region_id in clashes and level < len(self.QUALIFIERS):
                facts = {**c.facts, "qualifiers": level + 1}
                c = replace(c, short=self.short(facts), facts=facts)
            out.append(c)
        return out

    def short(self, facts: dict) -> str:
        added = self.QUALIFIERS[: facts.get("qualifiers", 0)]
        words = [facts[q] for q in ("size", "texture", "shape") if q in added]
        adj, label = " ".join([*words, self._adjective(facts, 2)]), facts["label"]
        phrase = f"{adj} text" if label == "text" and not words else f"{article(adj)} {adj} {label}"
        if facts.get("part_of"):
            phrase += f" of the {facts['part_of']}"
        if "position" in added:
            phrase += f" {POSITION_PHRASES[facts['position']]}"
        if facts["text"]:
            phrase += f' reading "{facts["text"]}"'
        return phrase

    def detailed(self, facts: dict) -> str:
        adj, label = self._adjective(facts, 3), facts["label"]
        head = f"{facts['size']} {adj} {label}"
        head = head if label == "text" else f"{article(head)} {head}"
        if facts.get("part_of"):
            head += f" of the {facts['part_of']}"
        where = POSITION_PHRASES[facts["position"]]
        sentences = [f"{head[0].upper()}{head[1:]} {where} of the image, covering {pct(facts['size_frac'])} of it."]
        named = [f"{n} ({pct(s)})" for n, s in facts["colors"]]
        top = facts["colors"][0][1]
        if facts["multicolored"]:
            sentences.append(f"A mix of colors, none covering {pct(self.color_min_share)}: {join_words(named)}.")
        elif top >= 0.5:
            lead = "Almost entirely" if top >= 0.9 else "Mostly"
            rest = f" with some {join_words(named[1:])}" if len(named) > 1 else ""
            sentences.append(f"{lead} {named[0]}{rest}.")
        else:
            sentences.append(f"Its main color{'s are' if len(named) > 1 else ' is'} {join_words(named)}.")
        sentences.append(f"It is {facts['aspect']} and {facts['shape']} with a {facts['texture']} surface.")
        if facts["text"]:
            sentences.append(f'It reads "{facts["text"]}".')
        return " ".join(sentences)

