"""Tagger "palette": the image's dominant named colours as tags (CPU, no model).

A palette, not object names: the embedded engine has no open-vocabulary model, and it says so
rather than guess. Used as a crop tagger it names a region's main colour.
"""

from __future__ import annotations

import numpy as np

from groundcap import colors
from groundcap.annotators.base import Tag, Tagger
from groundcap.annotators.registry import register


@register("tagger", "palette", needs=("skimage",), description="Dominant named colours (CIE Lab) as tags")
class PaletteTagger(Tagger):
    model = "CIE Lab named colours"
    defaults = {"min_share": 0.15, "max_tags": 3}

    def tag(self, image: np.ndarray) -> list[Tag]:
        shares = colors.color_shares(image.reshape(-1, 3))
        tags = [Tag(name, round(share, 4), self.name) for name, share in shares if share >= self.min_share]
        return tags[: self.max_tags]
