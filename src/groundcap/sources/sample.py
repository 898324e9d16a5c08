"""The bundled sample: real photos that scikit-image ships in its wheel, so the demo needs no download.

Only images whose licence scikit-image states as public domain or CC0 are used; each carries its licence
(``license``), which the card declares and lists.
"""

from __future__ import annotations

from pathlib import Path

import skimage.data

from groundcap.errors import SourceError
from groundcap.licenses import PUBLIC_DOMAIN

CC0 = "CC0-1.0"

# file in skimage/data -> (what it is, licence as scikit-image states it, its id: licenses.identify's or
# public domain, where scikit-image says "no known copyright restrictions", the Public Domain Mark's own words)
IMAGES: dict[str, tuple[str, str, str]] = {
    "astronaut.png": ("Eileen Collins, NASA portrait", "public domain (NASA)", PUBLIC_DOMAIN),
    "camera.png": ("a man with a camera on a tripod", "CC0 (Lav Varshney)", CC0),
    "chelsea.png": ("Chelsea the cat", "CC0 (Stefan van der Walt)", CC0),
    "coffee.png": ("a cup of coffee", "CC0 (Rachel Michetti)", CC0),
    "coins.png": ("Greek coins from Pompeii", "no known copyright restrictions (Brooklyn Museum)", PUBLIC_DOMAIN),
    "hubble_deep_field.jpg": ("Hubble eXtreme Deep Field", "public domain (NASA)", PUBLIC_DOMAIN),
    "ihc.png": ("immunohistochemistry stain", "no known copyright restrictions", PUBLIC_DOMAIN),
    "logo.png": ("the scikit-image logo", "CC0 (Andreas Maier)", CC0),
    "page.png": ("a scanned page of text", "CC0 (Andreas Preuss)", CC0),
    "retina.jpg": ("a human retina", "CC0", CC0),
    "rocket.jpg": ("a Falcon 9 launch", "public domain (SpaceX)", PUBLIC_DOMAIN),
    "text.png": ("text on a wall", "public domain", PUBLIC_DOMAIN),
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
    rows = "\n".join(f"| `{name}` | {what} | {lic} |" for name, (what, lic, _) in sorted(IMAGES.items()))
    return "| file | what | licence |\n|---|---|---|\n" + rows
