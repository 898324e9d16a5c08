"""Issue 15's fuzz run: a seeded generator of a few hundred malformed files and list entries through the
real ingest stage. No hang (pytest-timeout, and each read bounded by ``file_timeout_s``), no crash, every
entry accounted for (ingested, or rejected with a reason), and the good files keep the ids they get alone."""

from __future__ import annotations

import copy
import io
import os
import socket
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from groundcap import ingest, params
from groundcap.pipeline.stage import Context
from groundcap.stages import ingest as ingest_stage

SEED = 15
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif"}


def _encode(rng: np.random.Generator, fmt: str) -> bytes:
    side = int(rng.integers(40, 72))
    pixels = rng.integers(0, 255, (side, side + 3, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG's IHDR claiming another size, with a valid CRC so only the size is absurd."""
    ihdr = bytearray(data[8:33])
    ihdr[8:16] = struct.pack(">II", width, height)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return data[:8] + bytes(ihdr) + data[33:]


def _archive(kind: str, inner: bytes) -> bytes:
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("inner.png", inner)
            zf.writestr("nested.zip", _archive("tar", inner))
    else:
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo("inner.png")
            info.size = len(inner)
            tf.addfile(info, io.BytesIO(inner))
    return buf.getvalue()


def _malformed(rng: np.random.Generator, n: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(n):
        fmt = list(FORMATS)[i % len(FORMATS)]
        data = bytearray(_encode(rng, fmt))
        kind = ("truncate", "header_flips", "body_flips", "dims", "archive", "noise")[int(rng.integers(0, 6))]
        if kind == "truncate":
            data = data[: int(rng.integers(0, len(data)))]
        elif kind in ("header_flips", "body_flips"):
            span = min(64, len(data)) if kind == "header_flips" else len(data)
            for _ in range(int(rng.integers(1, 6))):
                pos = int(rng.integers(0, span))
                data[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == "dims":
            png = _encode(rng, "PNG")
            width, height = [(65535, 65535), (2**31 - 1, 1), (0, 0), (1, 100000), (100000, 100000)][i % 5]
            data, fmt = bytearray(_png_with_size(png, width, height)), "PNG"
        elif kind == "archive":
            data, fmt = bytearray(_archive(("zip", "tar")[i % 2], _encode(rng, "PNG"))), "PNG"
        else:
            data = bytearray(rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes())
        out[f"bad/{i:03d}_{kind}.{FORMATS[fmt]}"] = bytes(data)
    return out


def _specials(src: Path, outside: Path) -> list[str]:
    """FIFOs, a socket and links of every awkward kind inside ``src``; their names."""
    made = []
    for i in range(4):
        os.mkfifo(src / f"special/fifo{i}.png")
        made.append(f"special/fifo{i}.png")
    links = {"zero.png": "/dev/zero", "null.jpg": "/dev/null", "dangling.png": str(src / "nowhere.png"),
             "out.png": str(outside / "secret.png"), "dir.png": str(outside), "self.png": str(src / "special/self.png")}
    for name, target in links.items():
        (src / "special" / name).symlink_to(target)
        made.append(f"special/{name}")
    return made


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about each broken TIFF tag it skips
def test_fuzzed_sources_are_all_accounted_for_and_never_hang(tmp_path):
    rng = np.random.default_rng(SEED)
    good = {f"good/{i:02d}.{FORMATS[fmt]}": _encode(rng, fmt) for i, fmt in enumerate(list(FORMATS) * 3)}
    bad = _malformed(rng, 240)
    src, outside = tmp_path / "src", tmp_path / "outside"
    for name, data in {**good, **bad}.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    outside.mkdir()
    (outside / "secret.png").write_bytes(_encode(rng, "PNG"))
    (src / "special").mkdir()
    specials = _specials(src, outside)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "special/sock.png"))
    specials.append("special/sock.png")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    entries = [*good, *list(bad)[:40], *specials, "missing.png", "/dev/zero", "file:///dev/urandom",
               f"http://127.0.0.1:{closed}/a.png", "s3://bucket/a.png", "hf://datasets/o/r/a.png", "gs::bad",
               "ftp://example.invalid/a.png", "http://[::1", "http://", "data:image/png;base64,AAAA",
               "special/../special/fifo0.png", "good", "bad/../../outside/secret.png"]
    (src / "list.txt").write_text("\n".join(entries) + "\n")

    alone = {name: ingest.image_id(ingest.validate(data, _limits())["bytes"]) for name, data in good.items()}
    try:
        start = time.monotonic()
        folder = _run(tmp_path / "folder", src)
        listed = _run(tmp_path / "list", src / "list.txt")
        elapsed = time.monotonic() - start
    finally:
        sock.close()

    folder_names = {*good, *bad, *specials, "list.txt"}
    for (images, rejects), names in ((folder, folder_names), (listed, entries)):
        accounted = list(images["source_path"]) + list(rejects["path"])
        assert sorted(accounted) == sorted(names)  # each entry once: ingested or rejected
        assert all(reason.strip() for reason in rejects["reason"])
        ids = dict(zip(images["source_path"], images["image_id"], strict=True))
        assert {name: ids.get(name) for name in good} == alone
    reasons = dict(zip(folder[1]["path"], folder[1]["reason"], strict=True))
    assert all("never opened" in reasons[name] for name in specials if "fifo" in name or "sock" in name)
    assert "a link out of the source folder" in reasons["special/out.png"]
    assert elapsed < 60, elapsed


def _limits() -> ingest.Limits:
    return ingest.Limits.from_params(params.defaults()["ingest"])


def _run(root: Path, source: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    p = copy.deepcopy(params.defaults())
    p["source"] = str(source)
    p["ingest"]["source_policy"].update(file_timeout_s=10, connect_timeout_s=2, read_timeout_s=2)
    ingest_stage.STAGE.run(Context(root=root, params=p, progress=False))
    return pl.read_parquet(root / "work/ingest/*.parquet"), pl.read_parquet(root / "reports/rejects.parquet")
