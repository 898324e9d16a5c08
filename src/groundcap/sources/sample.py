"""The bundled sample: real photos that scikit-image ships in its wheel, so the demo needs no download.

Only images whose licence scikit-image states as public domain or CC0 are used; the card lists each.
"""

from __future__ import annotations

from pathlib import Path

import skimage.data

from groundcap.errors import SourceError

# file in skimage/data -> (what it is, licence as scikit-image states it)
IMAGES: dict[str, tuple[str, str]] = {
    "astronaut.png": ("Eileen Collins, NASA portrait", "public domain (NASA)"),
    "camera.png": ("a man with a camera on a tripod", "CC0 (Lav Varshney)"),
    "chelsea.png": ("Chelsea the cat", "CC0 (Stefan van der Walt)"),
    "coffee.png": ("a cup of coffee", "CC0 (Rachel Michetti)"),
    "coins.png": ("Greek coins from Pompeii", "no known copyright restrictions (Brooklyn Museum)"),
    "hubble_deep_field.jpg": ("Hubble eXtreme Deep Field", "public domain (NASA)"),
    "ihc.png": ("immunohistochemistry stain", "no known copyright restrictions"),
    "logo.png": ("the scikit-image logo", "CC0 (Andreas Maier)"),
    "page.png": ("a scanned page of text", "CC0 (Andreas Preuss)"),
    "retina.jpg": ("a human retina", "CC0"),
    "rocket.jpg": ("a Falcon 9 launch", "public domain (SpaceX)"),
    "text.png": ("text on a wall", "public domain"),
}

PREFIX = "sample:"


def data_dir() -> Path:
    return Path(skimage.data.__file__).parent


def paths() -> list[Path]:
    """The sample files, sorted; an error if the installed scikit-image lacks one."""
    root = data_dir()
    missing = [name for name in IMAGES if not (root / name).is_file()]
    if missing:
        raise SourceError(f"scikit-image at {root} lacks sample files {missing}; reinstall scikit-image")
    return [root / name for name in sorted(IMAGES)]


def licenses_markdown() -> str:
    rows = "\n".join(f"| `{name}` | {what} | {lic} |" for name, (what, lic) in sorted(IMAGES.items()))
    return "| file | what | licence |\n|---|---|---|\n" + rows
