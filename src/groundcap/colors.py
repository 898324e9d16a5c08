"""Named colours measured in CIE Lab, so a caption's colour words come from the pixels.

Each pixel gets the name of its nearest prototype in Lab (CIE76 distance). Lab distance alone
mislabels dark or washed-out pixels as the nearest hue, so pixels with little chroma, or too dark to
show a hue, are named black / gray / white from their lightness alone.

A pixel's name depends on its sRGB value alone, and there are 2^24 of those: ``name_codes`` remembers the
name of every value it has named (one byte each), so the Lab conversion and the prototype search run once
per distinct colour, not once per pixel of every region that holds it (naming all 2^24 up front costs
minutes of CPU, more than any one run of the pipeline needs).

The captioners (``annotators.backends``) name colours with it and QA (``qa.claims``, ``qa.evidence``)
checks colour words against it, so it sits below both.
"""

from __future__ import annotations

import functools

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


_SORTED = np.array(sorted(NAMES))  # a code is an index into this: codes sort as the names do


@functools.cache
def _memo() -> np.ndarray:
    """1 + the code of each sRGB value (r << 16 | g << 8 | b) named so far, 0 for not yet; zeroed pages take memory
    only once written."""
    return np.zeros(1 << 24, dtype=np.uint8)


def name_codes(pixels_rgb: np.ndarray) -> np.ndarray:
    """The code (index into ``_SORTED``) of ``name_pixels(to_lab(p))`` for each pixel p of a (..., 3) uint8 RGB array,
    as a flat array; each distinct colour is converted and named once per process."""
    memo = _memo()
    rgb = np.asarray(pixels_rgb, dtype=np.uint8).reshape(-1, 3).astype(np.uint32)
    keys = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    codes = memo[keys]
    if not codes.all():
        new = np.unique(keys[codes == 0])
        values = np.stack([new >> 16, (new >> 8) & 255, new & 255], axis=1).astype(np.uint8)
        memo[new] = 1 + np.searchsorted(_SORTED, name_pixels(to_lab(values)))
        codes = memo[keys]
    return codes - 1


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
    counts = np.bincount(name_codes(pixels), minlength=len(_SORTED))
    shares = [(str(n), float(c) / len(pixels)) for n, c in zip(_SORTED, counts, strict=True) if c]
    return sorted(shares, key=lambda s: (-s[1], s[0]))


# --- shade words: what a VLM writes beyond the basic names ---------------------------------------------
#
# From two maintained lists of colour names with sRGB values, both shipped with matplotlib: the xkcd colour
# survey's 949 names (``matplotlib.colors.XKCD_COLORS``) and CSS Color Module Level 4's named colours
# (``CSS4_COLORS``). Only words a caption uses as a colour are taken: the xkcd names of two or more words
# that end in a colour word ("navy blue", "burnt orange", "light grey"), the "-ish" forms ("reddish"), and
# the single words below. A name both lists give holds both values: the two often differ ("royal blue" is
# #0504aa in the survey, #4169e1 in CSS) and a caption may mean either.
SHADE_WORDS = frozenset((
    "crimson scarlet vermillion carmine maroon burgundy claret cerise magenta fuchsia mauve puce lilac lavender "
    "violet indigo periwinkle navy cobalt cerulean azure ultramarine teal turquoise aqua aquamarine viridian "
    "chartreuse khaki ochre ocher amber tan taupe sepia umber russet auburn ecru ivory "
    # gems, metals and other things whose names VLMs use as colours; not topaz (the survey's is blue topaz, a
    # caption may mean golden) nor the packaged vocabulary's nouns (sand, lemon, wine, chocolate), which label regions
    "emerald ruby sapphire amethyst jade gold golden silver bronze copper gunmetal charcoal salmon coral peach plum "
    "mint lime olive mustard cream cherry rust sienna terracotta chestnut mahogany slate").split())
# gem and metal names neither list has, read as the listed colour they are named after
ALIASES = {"silvery": "silver", "coppery": "copper", "platinum": "silver", "pewter": "grey", "brass": "gold",
           "pearl": "off white", "jet": "black", "onyx": "black", "ebony": "black", "garnet": "wine",
           "rose gold": "dusty rose"}
# a shade word before one of these nouns names the thing, not its colour ("a golden retriever", "olive oil")
THING_NOUNS = {
    "golden": ("retriever", "retrievers", "hour", "gate"), "olive": ("oil", "tree", "trees", "branch"),
    "slate": ("roof", "roofs", "tile", "tiles"), "salmon": ("fillet", "steak", "sushi"),
    "lime": ("slice", "slices", "wedge", "wedges", "tree"),
    "cherry": ("tree", "trees", "blossom", "blossoms", "tomato", "tomatoes", "pie"),
    "cream": ("cheese", "sauce", "puff"), "mint": ("leaf", "leaves"),
    "jet": ("ski", "skis", "engine", "plane", "stream"), "gold": ("medal", "medals"),
    "silver": ("medal", "medals"), "bronze": ("medal", "medals", "statue"), "coral": ("reef", "reefs"),
    "peach": ("tree", "pit"), "plum": ("tree",), "mahogany": ("tree",), "chestnut": ("tree", "trees"),
}
# the basic name these are called by where their nearest prototype says another ("silver" is light enough for white),
# so two models saying "silver" and "gray" agree (``qa.claims.agreement``)
BASIC = {"silver": "gray", "silvery": "gray", "platinum": "gray", "charcoal": "gray", "cream": "beige"}
HUES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "violet")
_ISH = {"red": ("reddish",), "orange": ("orangish", "orangey"), "yellow": ("yellowish",), "green": ("greenish",),
        "blue": ("bluish", "blueish"), "purple": ("purplish",), "pink": ("pinkish",), "brown": ("brownish",)}


SIZE_WORDS = frozenset({"medium", "big", "large", "small", "tiny"})  # "a medium brown region" is a size and a colour


def _shade_table() -> dict[str, tuple[tuple[int, int, int], ...]]:
    """Shade word -> its sRGB values: the lists' names, compounds of two hues, shade words before a colour word."""
    from matplotlib import colors as mpl_colors  # the lists live there; only loaded when a caption is parsed

    def rgb(hex_value: str) -> tuple[int, int, int]:
        return tuple(int(hex_value[i:i + 2], 16) for i in (1, 3, 5))

    xkcd = {k.removeprefix("xkcd:"): v for k, v in mpl_colors.XKCD_COLORS.items()}
    css = mpl_colors.CSS4_COLORS

    def values(name: str) -> tuple[tuple[int, int, int], ...]:
        key = name.replace(" ", "").replace("grey", "gray")
        # CSS's darkgray (#a9a9a9) is lighter than its gray, an X11 quirk no caption means
        found = (xkcd.get(name), None if key == "darkgray" else css.get(key))
        return tuple(dict.fromkeys(rgb(v) for v in found if v))

    enders = {*NAMES, "grey", *SHADE_WORDS}
    table = {}
    for name in sorted(xkcd):
        words = name.split()
        if "/" in name or "'" in name or name in NAMES or name == "grey" or words[0] in SIZE_WORDS:
            continue
        if (len(words) > 1 and words[-1] in enders) or (len(words) == 1 and name.endswith("ish")):
            table[name] = values(name)
    for name in sorted(SHADE_WORDS):
        table[name] = values(name)
    for name, listed in ALIASES.items():
        table[name] = values(listed)
    for first in HUES:  # "blue-green", "bluish green": the lists' value where they have one, and the two hues' mean
        for second in HUES:
            if first != second:
                for lead in (first, *_ISH.get(first, ())):
                    mean = tuple(round((a + b) / 2) for a, b in zip(*(values(h)[0] for h in (first, second)),
                                                                    strict=True))
                    table[f"{lead} {second}"] = tuple(dict.fromkeys((*table.get(f"{lead} {second}", ()), mean)))
    for word in sorted(SHADE_WORDS | ALIASES.keys()):  # "ruby red", "sapphire blue": the shade's own values
        for colour in (*NAMES, "grey"):
            table.setdefault(f"{word} {colour}", table[word])
    for name in [n for n in table if "grey" in n]:  # both spellings
        table.setdefault(name.replace("grey", "gray"), table[name])
    return table


_SHADES: dict[str, tuple[tuple[tuple[int, int, int], ...], np.ndarray, str]] = {}


def shades() -> dict[str, tuple[tuple[tuple[int, int, int], ...], np.ndarray, str]]:
    """``shade word -> (sRGB values, their Lab (k, 3), basic name)``: the basic name is the colour word a
    compound ends in ("navy blue" -> blue, "dark grey" -> gray), else ``BASIC``'s, else what ``name_pixels``
    calls the shade's first value."""
    if not _SHADES:
        for name, values in _shade_table().items():
            lab = to_lab(np.array(values, dtype=np.uint8))
            last = name.split()[-1].replace("grey", "gray")
            basic = last if last in NAMES else BASIC.get(name) or str(name_pixels(lab[:1])[0])
            _SHADES[name] = (values, lab, basic)
    return _SHADES


def shade_share(pixels_rgb: np.ndarray, shade: str, tolerance: float, max_samples: int = MAX_SAMPLES) -> float:
    """Fraction of the pixels within CIEDE2000 ``tolerance`` of any of ``shade``'s Lab values."""
    from skimage.color import deltaE_ciede2000

    pixels = sample(pixels_rgb, max_samples)
    if len(pixels) == 0:
        return 0.0
    lab = to_lab(pixels)
    near = np.zeros(len(lab), dtype=bool)
    for target in shades()[shade][1]:
        near |= deltaE_ciede2000(lab, target[None, :]) <= tolerance
    return float(near.mean())
