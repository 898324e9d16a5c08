"""Shared fixtures: real photos from scikit-image and a folder of deliberately awkward files."""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import yaml
from filelock import FileLock  # a dependency of datasets and huggingface_hub
from PIL import Image

from groundcap import params
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context
from groundcap.sources import sample

# session fixtures that run the whole pipeline once per test run, shared by the pytest-xdist workers
SHARED_RUNS = ("sample_project", "small_project")


def _uses_shared_run(item: pytest.Item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in SHARED_RUNS)


def _for_two_workers(items: list[pytest.Item]) -> list[pytest.Item]:
    """The order for ``pytest -n 2 --dist worksteal``, which hands the first half of the list to one worker
    and the second half to the other, and lets an idle worker steal from the end of the other's: one half
    opens with the shared runs' tests (``sample_project``'s, then ``small_project``'s), the other with the
    other slow tests (the bench run, DVC), and both end with fast tests, so nothing long is left for last.
    Within each group the tests keep their file order, so a module's fixtures are set up once."""
    shared = sorted((i for i in items if _uses_shared_run(i)),
                    key=lambda i: [name in i.fixturenames for name in SHARED_RUNS].index(True))
    slow = [i for i in items if not _uses_shared_run(i) and i.get_closest_marker("slow")]
    fast = [i for i in items if not _uses_shared_run(i) and not i.get_closest_marker("slow")]
    first = max(0, len(items) // 2 - len(shared))  # fast tests that fill the first half
    return shared + fast[:first] + slow + fast[first:]


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items):
    """Every test that needs a whole-pipeline run (``sample_project``, ``small_project``, directly or through
    another fixture) is ``slow``, marked before ``-m "not slow"`` deselects: the first one pays for the run.
    Under pytest-xdist the tests left after deselection are then ordered for two workers."""
    for item in items:
        if _uses_shared_run(item):
            item.add_marker(pytest.mark.slow)
    yield
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = _for_two_workers(items)


def _shared(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A project ``build`` writes once per test run. Under pytest-xdist the first worker to need it builds it
    (the others wait on a file lock) and each worker gets a copy of its own, so that tests adding files
    beside it (an audit export) never meet another worker's."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.mktemp(name)
        build(root)
        return root
    shared = tmp_path_factory.getbasetemp().parent / name  # the folder all workers of this run share
    built = shared.with_name(f"{name}.built")
    with FileLock(shared.with_name(f"{name}.lock")):
        if not built.is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a build that failed half way
            build(shared)
            built.touch()
    return shutil.copytree(shared, tmp_path_factory.mktemp(name), dirs_exist_ok=True)


def _run(root: Path, source: str, **overrides) -> None:
    run_all(Context(root=root, params=params.defaults() | {"source": source, **overrides}, progress=False))


@pytest.fixture(scope="session")
def sample_project(tmp_path_factory) -> Path:
    """The bundled sample (12 photos) through every stage with the default params, once per test run.

    Tests read it (and may add files beside it, like an audit export); none changes what a stage wrote.
    """
    return _shared(tmp_path_factory, "sample", lambda root: _run(root, "sample:"))


SMALL_PHOTOS = 4


def _small(root: Path) -> None:
    photos = root / "photos"
    photos.mkdir(parents=True)
    for path in sample.paths()[:SMALL_PHOTOS]:
        shutil.copy(path, photos / path.name)
    (root / "params.yaml").write_text(yaml.safe_dump({"source": str(photos), "part_size": 2}), encoding="utf-8")
    run_all(Context(root=root, params=params.load(root / "params.yaml"), progress=False))


@pytest.fixture(scope="session")
def small_project(tmp_path_factory) -> Path:
    """The first four sample photos in two parts (``part_size: 2``) through every stage, once per test run:
    for tests that compare a second run of the same input with this one (executors, resume, determinism),
    where four photos in two parts show what twelve in one would, at a third of the cost.

    Its ``params.yaml`` names the photos it was built from (``small_params``); tests read it and never change
    what a stage wrote.
    """
    return _shared(tmp_path_factory, "small", _small)


def small_params(root: Path, **executor) -> dict:
    """``small_project``'s params, with ``executor`` options changed. Its source stays the folder it was built
    from (not the copy's): the card's params hash covers ``source``, so a second run must name the same one."""
    p = params.load(root / "params.yaml")
    p["executor"] = {**p["executor"], **executor}
    return p


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
