"""Colour words as VLMs write them, against QA's colour check (``qa.evidence``): a labelled set and its scores.

Each colour expression below (basic names, shades, compounds such as "navy blue", "off-white" or "blue-green",
gem and metal colours) comes with the sRGB value a reference list of colour names gives it (Wikipedia's
"List of colors" and the X11/CSS values it cites), written here by hand: the check under test reads
matplotlib's xkcd and CSS lists, not this table. For each expression, regions of its colour are drawn with
the shading and noise a photographed surface has (a lightness gradient across the region, per-pixel noise
in Lab), and captioned the way a VLM writes ("A navy blue car in the centre of the image."). A true caption
names the region's own expression; a false one names an expression of another split member whose colour is
far from it (CIEDE2000 >= ``FALSE_MIN_DELTA``). Recall is the share of false captions the check contradicts;
the false-alarm rate, the share of true captions it contradicts.

The expressions are split in two by a hash of their text, each category in both halves: ``tune`` is what the
check was developed against, ``held-out`` was never looked at while changing it (only its totals are
printed). ``--baseline REF`` runs the same set through the check as it was at git ``REF`` (its ``src/``
exported to a temporary folder, run in a child process), so old and new are printed side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "eb850d2"  # the check before colour words as VLMs write them (issue 25, item 8)
FALSE_MIN_DELTA = 35.0  # a false caption's colour is at least this far (CIEDE2000) from the region's
IMAGES_PER_WORD = 2
SIDE = 48

# expression -> (category, sRGB): the value a reference list of colour names gives it
COLOURS: dict[str, tuple[str, tuple[int, int, int]]] = {
    # basic names, as a photographed thing of that colour typically is
    **{w: ("basic", c) for w, c in {
        "red": (200, 30, 40), "orange": (240, 130, 30), "yellow": (240, 210, 40), "green": (40, 140, 60),
        "blue": (30, 80, 200), "purple": (120, 50, 150), "pink": (240, 150, 180), "brown": (120, 75, 40),
        "black": (20, 20, 20), "white": (245, 245, 245), "gray": (128, 128, 128), "grey": (120, 120, 120),
    }.items()},
    # single shade words
    **{w: ("shade", c) for w, c in {
        "navy": (0, 0, 128), "crimson": (220, 20, 60), "scarlet": (255, 36, 0), "maroon": (128, 0, 0),
        "burgundy": (128, 0, 32), "magenta": (255, 0, 255), "lavender": (181, 126, 220), "violet": (143, 0, 255),
        "indigo": (75, 0, 130), "teal": (0, 128, 128), "aqua": (0, 255, 255), "khaki": (195, 176, 145),
        "tan": (210, 180, 140), "beige": (245, 245, 220), "cream": (255, 253, 208), "mint": (152, 255, 152),
        "lime": (191, 255, 0), "olive": (128, 128, 0), "mustard": (255, 219, 88), "peach": (255, 229, 180),
        "coral": (255, 127, 80), "salmon": (250, 128, 114), "plum": (142, 69, 133), "mauve": (224, 176, 255),
        "lilac": (200, 162, 200), "periwinkle": (204, 204, 255), "cobalt": (0, 71, 171), "azure": (0, 127, 255),
        "cerulean": (0, 123, 167), "chartreuse": (127, 255, 0), "ochre": (204, 119, 34), "rust": (183, 65, 14),
        "terracotta": (226, 114, 91), "sienna": (160, 82, 45), "auburn": (165, 42, 42), "chestnut": (149, 69, 53),
        "mahogany": (192, 64, 0), "chocolate": (123, 63, 0), "sepia": (112, 66, 20), "slate": (112, 128, 144),
        "charcoal": (54, 69, 79), "cherry": (222, 49, 99), "wine": (114, 47, 55), "raspberry": (227, 11, 92),
        "lemon": (255, 247, 0), "sand": (194, 178, 128), "fuchsia": (255, 0, 255), "vermilion": (227, 66, 52),
    }.items()},
    # compounds: a modifier or a second colour word
    **{w: ("compound", c) for w, c in {
        "navy blue": (0, 0, 128), "light blue": (173, 216, 230), "dark blue": (0, 0, 139),
        "baby blue": (137, 207, 240), "sky blue": (135, 206, 235), "royal blue": (65, 105, 225),
        "powder blue": (176, 224, 230), "steel blue": (70, 130, 180), "midnight blue": (25, 25, 112),
        "dark green": (0, 100, 0), "light green": (144, 238, 144), "olive green": (107, 142, 35),
        "forest green": (34, 139, 34), "lime green": (50, 205, 50), "mint green": (152, 251, 152),
        "sea green": (46, 139, 87), "emerald green": (80, 200, 120), "bright red": (238, 75, 43),
        "dark red": (139, 0, 0), "blood red": (136, 8, 8), "cherry red": (210, 4, 45), "brick red": (203, 65, 84),
        "light pink": (255, 182, 193), "hot pink": (255, 105, 180), "pale pink": (249, 204, 202),
        "pale yellow": (255, 255, 191), "golden yellow": (255, 223, 0), "lemon yellow": (255, 244, 79),
        "mustard yellow": (225, 173, 1), "dark brown": (92, 64, 51), "light brown": (181, 101, 29),
        "reddish-brown": (165, 42, 42), "chocolate brown": (123, 63, 0), "off-white": (250, 249, 246),
        "jet black": (52, 52, 52), "charcoal gray": (54, 69, 79), "dark gray": (85, 85, 85),
        "light gray": (211, 211, 211), "slate gray": (112, 128, 144), "blue-green": (13, 152, 186),
        "yellow-green": (154, 205, 50), "red-orange": (255, 83, 73), "yellow-orange": (255, 174, 66),
        "blue-violet": (138, 43, 226), "red-violet": (199, 21, 133), "orange-red": (255, 69, 0),
        "burnt orange": (204, 85, 0), "deep purple": (54, 1, 63), "dark purple": (48, 25, 52),
        "light purple": (177, 156, 217), "pastel pink": (222, 165, 164), "pastel blue": (174, 198, 207),
        "pastel green": (119, 221, 119), "deep red": (133, 1, 1), "bright yellow": (255, 234, 0),
        "bright green": (102, 255, 0), "bright blue": (0, 150, 255), "dark orange": (255, 140, 0),
        "greenish-blue": (11, 139, 135), "bluish-green": (16, 166, 116), "grayish-blue": (102, 120, 140),
        "off white": (250, 249, 246), "ivory white": (255, 255, 240), "snow white": (255, 250, 250),
        "silver-gray": (170, 169, 173), "rose pink": (255, 102, 204), "dusty pink": (220, 174, 170),
        "dusty blue": (140, 160, 180), "cream-colored": (255, 253, 208), "wine red": (114, 47, 55),
        "ruby red": (155, 17, 30), "sapphire blue": (15, 82, 186), "coral pink": (248, 131, 121),
    }.items()},
    # gems and stones
    **{w: ("gem", c) for w, c in {
        "emerald": (80, 200, 120), "ruby": (224, 17, 95), "sapphire": (15, 82, 186), "amethyst": (153, 102, 204),
        "jade": (0, 168, 107), "topaz": (255, 200, 124), "garnet": (115, 54, 53), "pearl": (234, 224, 200),
        "onyx": (53, 56, 57), "turquoise": (64, 224, 208), "aquamarine": (127, 255, 212), "amber": (255, 191, 0),
        "ivory": (255, 255, 240), "ebony": (85, 93, 80), "jet": (52, 52, 52),
    }.items()},
    # metals
    **{w: ("metal", c) for w, c in {
        "gold": (212, 175, 55), "golden": (218, 165, 32), "silver": (192, 192, 192), "silvery": (192, 192, 192),
        "bronze": (205, 127, 50), "copper": (184, 115, 51), "coppery": (184, 115, 51), "brass": (181, 166, 66),
        "platinum": (229, 228, 226), "gunmetal": (42, 52, 57), "pewter": (150, 168, 161), "rose gold": (183, 110, 121),
        "gold-colored": (212, 175, 55), "metallic silver": (170, 169, 173), "metallic gold": (212, 175, 55),
    }.items()},
}

NOUNS = ("car", "bag", "chair", "vase", "shirt", "umbrella", "cup", "sofa", "bottle", "box", "jacket", "door")
TEMPLATES = (
    "A {c} {n} in the center of the image.",
    "The {n} is {c}.",
    "a {c} {n}",
    "A {n} painted {c}, seen from the front.",
    "Close-up of a {c} {n} with a smooth surface.",
)


def split_of(expression: str) -> str:
    """``tune`` or ``held-out``, by a hash of the text: each word stays in one half whatever the table holds."""
    return "tune" if hashlib.sha256(expression.encode()).digest()[0] % 2 == 0 else "held-out"


def _lab(rgb) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.asarray(rgb, dtype=np.uint8).reshape(-1, 1, 3))[:, 0, :]


def region_image(rgb: tuple[int, int, int], seed: int) -> np.ndarray:
    """A ``SIDE`` x ``SIDE`` patch of ``rgb`` as a photographed thing of that colour: its own colour a little
    off the reference (up to 6 L* and 8 in a*b*: a thing called navy is rarely exactly #000080), lightness
    shading across it (up to +-12 L*), Lab noise (sigma 2.5), clipped to sRGB."""
    from skimage.color import lab2rgb

    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi)
    base = _lab([rgb])[0] + np.array([rng.uniform(-6, 6), *(rng.uniform(0, 8) * np.array([np.cos(angle),
                                                                                          np.sin(angle)]))])
    ramp = np.linspace(-1, 1, SIDE)[None, :] * rng.uniform(4, 12) * rng.choice([-1, 1])
    lab = np.empty((SIDE, SIDE, 3))
    lab[..., 0] = np.clip(base[0] + ramp + rng.normal(0, 2.5, (SIDE, SIDE)), 0, 100)
    lab[..., 1] = base[1] + rng.normal(0, 2.5, (SIDE, SIDE))
    lab[..., 2] = base[2] + rng.normal(0, 2.5, (SIDE, SIDE))
    with warnings.catch_warnings():  # out-of-gamut pixels: clipped to sRGB, as said
        warnings.simplefilter("ignore", UserWarning)
        return (np.clip(lab2rgb(lab), 0, 1) * 255).round().astype(np.uint8)


def labelled_set() -> list[dict]:
    """Every item: split, category, expression, caption, truth (the caption names the region's colour), seed."""
    from skimage.color import deltaE_ciede2000

    words = sorted(COLOURS)
    labs = _lab([COLOURS[w][1] for w in words])
    items = []
    for i, word in enumerate(words):
        part = split_of(word)
        distance = deltaE_ciede2000(labs, labs[i][None, :])
        far = [w for w, d in zip(words, distance, strict=True) if split_of(w) == part and d >= FALSE_MIN_DELTA]
        rng = np.random.default_rng(i)
        for k in range(IMAGES_PER_WORD):
            seed = 1000 * i + k
            for truth, said in ((True, word), (False, far[int(rng.integers(len(far)))])):
                template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
                caption = template.format(c=said, n=NOUNS[int(rng.integers(len(NOUNS)))])
                items.append({"split": part, "category": COLOURS[word][0], "expression": word, "said": said,
                              "caption": caption, "truth": truth, "seed": seed})
    return items


def verdicts(items: list[dict]) -> list[bool]:
    """Whether the check (the ``groundcap`` on ``sys.path``) contradicts each item's caption."""
    from groundcap import masks
    from groundcap.qa import evidence

    out = []
    whole = np.ones((SIDE, SIDE), dtype=bool)
    rle = masks.encode(whole)
    region = {"region_id": 0, "segmentation": rle, "bbox": masks.bbox(rle), "area": masks.area(rle), "label": ""}
    for item in items:
        image = region_image(COLOURS[item["expression"]][1], item["seed"])
        found = evidence.check_region(item["caption"], image, region, [region])
        out.append(any(v["kind"] == "color" and v["verdict"] == "contradicted" for v in found))
    return out


def scores(items: list[dict], contradicted: list[bool], split: str) -> dict:
    """Recall (false captions contradicted) and false alarms (true captions contradicted) over one split."""
    false = [c for item, c in zip(items, contradicted, strict=True) if item["split"] == split and not item["truth"]]
    true = [c for item, c in zip(items, contradicted, strict=True) if item["split"] == split and item["truth"]]
    return {"recall": sum(false) / len(false), "false_alarms": sum(true) / len(true), "false": len(false),
            "true": len(true)}


def by_category(items: list[dict], contradicted: list[bool]) -> dict:
    """Tuning split only: recall and false alarms per category (the held-out split is never broken down)."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for item, c in zip(items, contradicted, strict=True):
        if item["split"] == "tune":
            row = tally[item["category"]]
            row[0 if item["truth"] else 2] += int(c)
            row[1 if item["truth"] else 3] += 1
    return {k: (v[2] / v[3], v[0] / v[1]) for k, v in sorted(tally.items())}


def _baseline(ref: str, items: list[dict]) -> list[bool] | None:
    """The verdicts of the check at git ``ref``: its ``src/`` exported and run in a child process."""
    with tempfile.TemporaryDirectory(prefix="colour-words-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True)
        if archive.returncode:
            print(f"baseline {ref}: git archive failed ({archive.stderr.decode().strip()}); skipped")
            return None
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        child = subprocess.run([sys.executable, __file__, "--verdicts"], input=json.dumps(items), text=True,
                               capture_output=True, env={**os.environ, "PYTHONPATH": f"{tmp}/src"},
                               check=True)
        return json.loads(child.stdout)


def bench_colour_words(baseline: str | None = BASELINE) -> dict:
    items = labelled_set()
    new = verdicts(items)
    old = _baseline(baseline, items) if baseline else None
    result = {}
    for split in ("tune", "held-out"):
        now = scores(items, new, split)
        line = (f"colour words ({split}: {now['false']} false and {now['true']} true captions): "
                f"recall {now['recall']:.2f}, false alarms {now['false_alarms']:.1%}")
        if old is not None:
            before = scores(items, old, split)
            line += f"; at {baseline}: recall {before['recall']:.2f}, false alarms {before['false_alarms']:.1%}"
            result[f"{split} before"] = before
        print(line)
        result[split] = now
    for category, (recall, alarms) in by_category(items, new).items():
        print(f"  tune, {category}: recall {recall:.2f}, false alarms {alarms:.1%}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", action="store_true", help="read items (JSON) on stdin, print verdicts")
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the check to compare with ('' for none)")
    args = parser.parse_args()
    if args.verdicts:
        print(json.dumps(verdicts(json.load(sys.stdin))))
    else:
        bench_colour_words(args.baseline or None)
