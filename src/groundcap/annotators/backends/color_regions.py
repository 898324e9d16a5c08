"""Concept segmenter "color_regions": every connected area of the colour a phrase names (CPU, no model).

The embedded counterpart of SAM 3 for the only tags the embedded engine has, the palette's colour names:
a phrase that is a basic colour name (``colors.NAMES``, "grey" too) gets one mask per connected area of
pixels named so (``colors.name_pixels``, at ``work_side``, speckle removed by a 3x3 opening). Other
phrases get none: no model here reads them, and it says so rather than guess.
"""

from __future__ import annotations

import cv2
import numpy as np

from groundcap import colors, masks
from groundcap.annotators.backends.felzenszwalb import touches_border
from groundcap.annotators.base import ConceptSegmenter, Mask, at_work_side
from groundcap.annotators.registry import register


@register("concept_segmenter", "color_regions", needs=("skimage",),
          description="Connected areas of the colour each colour phrase names (CIE Lab)")
class ColorRegions(ConceptSegmenter):
    """Areas of at least ``min_area_frac`` of the image, largest first, at most ``max_instances`` per phrase.

    Score: the area's share of the image. Granularity: "stuff" when it touches the image border and covers
    at least ``stuff_min_frac`` of it (as ``felzenszwalb`` decides), else "object".
    """

    model = "CIE Lab named colours, connected components"
    defaults = {"work_side": 512, "min_area_frac": 0.01, "max_instances": 32, "stuff_min_frac": 0.1}

    def segment(self, image: np.ndarray, phrases: list[str]) -> list[Mask]:
        wanted = [p for p in dict.fromkeys(phrases) if p.lower().replace("grey", "gray") in colors.NAMES]
        if not wanted:
            return []
        height, width = image.shape[:2]
        work, scale = at_work_side(image, self.work_side)
        named = colors.name_pixels(colors.to_lab(work.reshape(-1, 3))).reshape(work.shape[:2])
        out = []
        for phrase in wanted:
            found = cv2.morphologyEx((named == phrase.lower().replace("grey", "gray")).astype(np.uint8),
                                     cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
            n, labels, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
            share = stats[:, cv2.CC_STAT_AREA] / labels.size
            edge = touches_border(labels, n)
            areas = sorted((k for k in range(1, n) if share[k] >= self.min_area_frac), key=lambda k: (-share[k], k))
            for k in areas[: self.max_instances]:
                area = (labels == k).astype(np.uint8)
                if scale < 1.0:
                    area = cv2.resize(area, (width, height), interpolation=cv2.INTER_NEAREST)
                if area.any():  # a sliver can vanish when scaled up
                    stuff = edge[k] and share[k] >= self.stuff_min_frac
                    out.append(Mask(masks.encode(area), phrase, float(share[k]), self.name,
                                    "stuff" if stuff else "object"))
        return out
