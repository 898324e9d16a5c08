"""Shared fixtures: real photos from scikit-image and a folder of deliberately awkward files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from groundcap import params
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context


def pytest_collection_modifyitems(items):
    """Every test that needs ``sample_project`` (directly or through another fixture) is ``slow``: the
    first one pays for the whole pipeline, and ``pytest -m "not slow"`` must not."""
    for item in items:
        if "sample_project" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sample_project(tmp_path_factory) -> Path:
    """The bundled sample through every stage with the default params, once per test run.

    Tests read it (and may add files beside it, like an audit export); none changes what a stage wrote.
    """
    root = tmp_path_factory.mktemp("sample")
    run_all(Context(root=root, params=params.defaults() | {"source": "sample:"}, progress=False))
    return root


def opt_in_formats(project: Path, out: Path) -> Path:
    """The opt-in release folders (``build.formats``: wds/ tars, coco/ JSON) of a built project, written in ``out``
    from its work/ as its build would have."""
    from groundcap.builders.files import SplitFiles
    from groundcap.builders.release import write_kinds

    p = params.defaults()
    p["build"]["formats"] = ["webdataset", "coco"]
    SplitFiles.publish(write_kinds(project / "work", out, p, None, ("wds", "coco"), {}))
    return out


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no real pixel data): a decompression-bomb probe."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# name -> (bytes, expected: "ok" or a fragment of the rejection reason)
def awkward_files() -> dict[str, tuple[bytes, str]]:
    cat = skimage.data.chelsea()
    coffee = skimage.data.coffee()
    good_jpeg = _jpeg(cat)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated = _jpeg(coffee, exif=exif.tobytes())
    cmyk = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).convert("CMYK").save(cmyk, format="JPEG")
    gray16 = Image.fromarray(skimage.data.camera().astype(np.uint16) * 257)
    palette = Image.fromarray(skimage.data.rocket()).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    frames = [Image.fromarray(np.full((64, 80, 3), v, np.uint8)) for v in (30, 120, 220)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "good/cat.jpg": (good_jpeg, "ok"),
        "good/nested/deeper/copy_of_cat.jpg": (good_jpeg, "exact duplicate"),
        "odd/cmyk.jpg": (cmyk.getvalue(), "ok"),
        "odd/gray16.png": (_png(gray16), "ok"),
        "odd/palette_alpha.png": (_png(palette), "ok"),
        "odd/exif_rotated.jpg": (rotated, "ok"),
        "odd/animated.gif": (gif.getvalue(), "ok"),
        "bad/truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "truncated"),
        "bad/empty.png": (b"", "empty file"),
        "bad/not_an_image.jpg": (b"this is a text file, not a picture\n" * 20, "not an image"),
        "bad/tiny.png": (_png(Image.new("RGB", (8, 8), "red")), "too small"),
        "bad/bomb.png": (_png_header_only(30000, 30000), "decompression bomb"),
        "bad/huge.png": (_png_header_only(9000, 9000), "too large"),
    }


@pytest.fixture
def awkward_dir(tmp_path: Path) -> Path:
    root = tmp_path / "awkward"
    for name, (data, _) in awkward_files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root
