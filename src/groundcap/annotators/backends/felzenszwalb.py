"""MaskGenerator "felzenszwalb": scikit-image's graph-based segmentation as "everything" masks."""

from __future__ import annotations

import cv2
import numpy as np

from groundcap import masks
from groundcap.annotators.base import Mask, MaskGenerator, at_work_side
from groundcap.annotators.registry import register


def homogeneity(lab: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Per segment: 1 / (1 + RMS CIE76 distance of its pixels to its mean Lab colour / 10).

    1.0 for a flat colour, 0.5 at an RMS spread of 10 Lab units (a clearly visible variation).
    """
    flat, idx = lab.reshape(-1, 3).astype(np.float64), labels.reshape(-1)
    count = np.bincount(idx, minlength=n).astype(np.float64)
    mean = np.stack([np.bincount(idx, flat[:, c], n) for c in range(3)], 1) / count[:, None]
    sq = np.bincount(idx, (flat**2).sum(1), n) / count
    var = np.maximum(sq - (mean**2).sum(1), 0.0)
    return 1.0 / (1.0 + np.sqrt(var) / 10.0)


def touches_border(labels: np.ndarray, n: int) -> np.ndarray:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.bincount(edge, minlength=n) > 0


@register("mask_generator", "felzenszwalb", needs=("skimage",),
          description="Felzenszwalb graph segmentation (scikit-image)")
class FelzenszwalbGenerator(MaskGenerator):
    """One mask per Felzenszwalb segment, computed with the longest side at most ``work_side``.

    ``min_size_frac`` is the smallest segment as a fraction of the working image's area. Score: the
    segment's colour homogeneity (``homogeneity``). Granularity: "stuff" when the segment touches
    the image border and covers at least ``stuff_min_frac`` of the image (sky, floor, walls extend
    past the frame), else "object".
    """

    model = "skimage.segmentation.felzenszwalb"

    defaults = {"work_side": 512, "scale": 400.0, "sigma": 0.8, "min_size_frac": 0.01, "stuff_min_frac": 0.1}

    def generate(self, image: np.ndarray) -> list[Mask]:
        from skimage.color import rgb2lab
        from skimage.segmentation import felzenszwalb

        height, width = image.shape[:2]
        work, scale = at_work_side(image, self.work_side)
        min_size = max(1, int(round(self.min_size_frac * work.shape[0] * work.shape[1])))
        labels = felzenszwalb(work, scale=self.scale, sigma=self.sigma, min_size=min_size, channel_axis=-1)
        _, labels = np.unique(labels, return_inverse=True)  # consecutive ids 0..n-1
        labels = labels.reshape(work.shape[:2]).astype(np.int32)
        n = int(labels.max()) + 1
        scores = homogeneity(rgb2lab(work), labels, n)
        area_frac = np.bincount(labels.reshape(-1), minlength=n) / labels.size
        stuff = touches_border(labels, n) & (area_frac >= self.stuff_min_frac)
        if scale < 1.0:
            labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        out = []
        for k in range(n):
            rle = masks.encode(labels == k)
            if masks.area(rle) == 0:  # a sliver can vanish when the label map is scaled
                continue
            out.append(Mask(rle, "region", float(scores[k]), "felzenszwalb", "stuff" if stuff[k] else "object"))
        return out
