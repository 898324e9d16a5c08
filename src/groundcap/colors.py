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


# --- shade words: what a VLM writes beyond the basic names ---------------------------------------------
#
# From two maintained lists of colour names with sRGB values, both shipped with matplotlib: the xkcd colour
# survey's 949 names (``matplotlib.colors.XKCD_COLORS``) and CSS Color Module Level 4's named colours
# (``CSS4_COLORS``). Only words a caption uses as a colour are taken: the xkcd names of two or more words
# that end in a colour word ("navy blue", "burnt orange", "light grey"), the "-ish" forms ("reddish"), and
# the single words below, which rarely name a thing in a caption ("olive", "salmon", "gold", "slate", "rust",
# "golden" are left out: a caption of olive oil, a slate roof or a golden retriever states no colour).
SHADE_WORDS = frozenset((
    "crimson scarlet vermillion carmine maroon burgundy claret cerise magenta fuchsia mauve puce lilac lavender "
    "violet indigo periwinkle navy cobalt cerulean azure ultramarine teal turquoise aqua aquamarine viridian "
    "chartreuse khaki ochre ocher amber tan taupe sepia umber russet auburn ecru ivory").split())


SIZE_WORDS = frozenset({"medium", "big", "large", "small", "tiny"})  # "a medium brown region" is a size and a colour


def _shade_table() -> dict[str, tuple[int, int, int]]:
    from matplotlib import colors as mpl_colors  # the lists live there; only loaded when a caption is parsed

    def rgb(hex_value: str) -> tuple[int, int, int]:
        return tuple(int(hex_value[i:i + 2], 16) for i in (1, 3, 5))

    xkcd = {k.removeprefix("xkcd:"): v for k, v in mpl_colors.XKCD_COLORS.items()}
    enders = {*NAMES, "grey", *SHADE_WORDS}
    table = {}
    for name, value in sorted(xkcd.items()):
        words = name.split()
        if "/" in name or "'" in name or name in NAMES or name == "grey" or words[0] in SIZE_WORDS:
            continue
        if (len(words) > 1 and words[-1] in enders) or (len(words) == 1 and name.endswith("ish")):
            table[name] = rgb(value)
    for name in SHADE_WORDS:
        table[name] = rgb(xkcd.get(name) or mpl_colors.CSS4_COLORS[name])
    return table


_SHADES: dict[str, tuple[tuple[int, int, int], np.ndarray, str]] = {}


def shades() -> dict[str, tuple[tuple[int, int, int], np.ndarray, str]]:
    """``shade word -> (sRGB, Lab, basic name)``: the basic name is the colour word a compound ends in
    ("navy blue" -> blue, "dark grey" -> gray), else what ``name_pixels`` calls the shade's Lab."""
    if not _SHADES:
        table = _shade_table()
        lab = to_lab(np.array(list(table.values()), dtype=np.uint8))
        nearest = name_pixels(lab)
        for i, (name, value) in enumerate(table.items()):
            last = name.split()[-1].replace("grey", "gray")
            _SHADES[name] = (value, lab[i], last if last in NAMES else str(nearest[i]))
    return _SHADES


def shade_share(pixels_rgb: np.ndarray, shade: str, tolerance: float, max_samples: int = MAX_SAMPLES) -> float:
    """Fraction of the pixels within CIEDE2000 ``tolerance`` of ``shade``'s Lab colour."""
    from skimage.color import deltaE_ciede2000

    pixels = sample(pixels_rgb, max_samples)
    if len(pixels) == 0:
        return 0.0
    target = shades()[shade][1]
    return float((deltaE_ciede2000(to_lab(pixels), target[None, :]) <= tolerance).mean())
