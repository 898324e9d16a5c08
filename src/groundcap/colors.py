"""Named colours measured in CIE Lab, so a caption's colour words come from the pixels.

Each pixel gets the name of its nearest prototype in Lab (CIE76 distance). Lab distance alone
mislabels dark or washed-out pixels as the nearest hue, so pixels with little chroma, or too dark to
show a hue, are named black / gray / white from their lightness alone.

The captioners (``annotators.backends``) name colours with it and QA (``qa.claims``, ``qa.evidence``)
checks colour words against it, so it sits below both.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2lab

# Several sRGB prototypes per name: one point per name would split hues badly (pure sRGB red is far
# more saturated than most red things).
PROTOTYPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((255, 0, 0), (200, 30, 35), (150, 20, 25), (220, 60, 60)),
    "orange": ((255, 140, 0), (230, 120, 40), (245, 165, 80)),
    "yellow": ((255, 230, 0), (240, 220, 80), (250, 240, 150)),
    "green": ((0, 160, 0), (80, 180, 70), (30, 90, 40), (150, 200, 80), (110, 130, 50)),
    "cyan": ((0, 200, 200), (80, 190, 200), (0, 130, 140)),
    "blue": ((0, 0, 255), (25, 35, 190), (40, 90, 200), (20, 40, 120), (100, 150, 230), (60, 100, 140)),
    "purple": ((128, 0, 128), (140, 80, 180), (90, 40, 120), (170, 130, 210), (150, 0, 210)),
    "pink": ((255, 150, 180), (230, 100, 160), (255, 192, 203), (255, 0, 255)),
    "brown": ((140, 80, 30), (100, 60, 30), (160, 110, 70), (90, 50, 40)),
    "beige": ((225, 200, 160), (210, 180, 140), (235, 220, 195)),
    "black": ((0, 0, 0), (35, 35, 35)),
    "gray": ((90, 90, 90), (128, 128, 128), (170, 170, 170)),
    "white": ((255, 255, 255), (225, 225, 225)),
}
NAMES: tuple[str, ...] = tuple(PROTOTYPES)

MIN_CHROMA = 10.0  # below this Lab chroma a pixel has no hue worth naming
MIN_HUE_LIGHTNESS = 15.0  # below this L* a pixel reads as black unless strongly saturated (navy)
DARK_MIN_CHROMA = 30.0
BLACK_MAX_L = 25.0  # achromatic lightness bands: black < 25 <= gray <= 80 < white
WHITE_MIN_L = 80.0
MAX_SAMPLES = 40_000  # colour shares are estimated on at most this many pixels (regular stride)

_PROTO_NAMES = np.array([name for name, protos in PROTOTYPES.items() for _ in protos])
_PROTO_LAB = rgb2lab(np.array([[p for protos in PROTOTYPES.values() for p in protos]], dtype=np.uint8))[0]


def to_lab(pixels_rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 3) float Lab."""
    return rgb2lab(np.asarray(pixels_rgb, dtype=np.uint8).reshape(-1, 1, 3))[:, 0, :].reshape(
        np.shape(pixels_rgb)
    )


def name_pixels(lab: np.ndarray) -> np.ndarray:
    """Colour name of each Lab pixel of an (N, 3) array."""
    lab = np.asarray(lab, dtype=np.float64).reshape(-1, 3)
    d = (_PROTO_LAB**2).sum(1)[None, :] - 2.0 * lab @ _PROTO_LAB.T  # |x-p|^2 minus the constant |x|^2
    names = _PROTO_NAMES[d.argmin(1)]
    light, chroma = lab[:, 0], np.hypot(lab[:, 1], lab[:, 2])
    achromatic = (chroma < MIN_CHROMA) | ((light < MIN_HUE_LIGHTNESS) & (chroma < DARK_MIN_CHROMA))
    grays = np.where(light < BLACK_MAX_L, "black", np.where(light > WHITE_MIN_L, "white", "gray"))
    return np.where(achromatic, grays, names)


def sample(pixels: np.ndarray, max_samples: int = MAX_SAMPLES) -> np.ndarray:
    """A deterministic regular-stride subsample of an (N, 3) pixel array."""
    pixels = np.asarray(pixels).reshape(-1, 3)
    step = max(1, -(-len(pixels) // max_samples))
    return pixels[::step]


def color_shares(pixels_rgb: np.ndarray, max_samples: int = MAX_SAMPLES) -> list[tuple[str, float]]:
    """(name, fraction of pixels) for every name present, largest first (ties by name)."""
    pixels = sample(pixels_rgb, max_samples)
    if len(pixels) == 0:
        return []
    names, counts = np.unique(name_pixels(to_lab(pixels)), return_counts=True)
    shares = [(str(n), float(c) / len(pixels)) for n, c in zip(names, counts, strict=True)]
    return sorted(shares, key=lambda s: (-s[1], s[0]))
