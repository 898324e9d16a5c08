"""The privacy pass's bytes (stage ``redact``): boxes grown and clipped, blurred, the image re-encoded;
and the metadata every released image is stripped of.

The blur keeps only ``cells`` x ``cells`` block means of a box and interpolates them back bilinearly:
nothing finer than a cell survives (a face becomes a smooth blob), and the arithmetic is integer sums
and element-wise float64, so the same image gives the same bytes on every machine (an OpenCV filter
may take another code path on another CPU). A blurred image is always re-encoded as PNG, losslessly:
its decoded pixels outside the boxes are exactly ingest's, whatever the source format (re-encoding a
JPEG as JPEG would change every pixel of it), with the source's ICC profile.

Every other released image keeps its encoded pixels byte for byte and loses what a camera or an editor
wrote about it (:func:`strip_metadata`): EXIF (GPS, camera make, body serial number, maker notes, the
thumbnail), XMP, IPTC, comments and text chunks. Only what changes how the pixels look stays: a JPEG's
JFIF (thumbnail dropped), ICC profile and Adobe colour-transform segments; a PNG's colour chunks.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from groundcap.ingest import decode_rgb, encode_png

# release.redact -> the labels an open-vocabulary detector is prompted with (Haar's cascades name their own)
TARGETS: dict[str, tuple[str, ...]] = {"faces_and_plates": ("face", "license plate"), "none": ()}

Box = tuple[int, int, int, int]  # x, y, w, h in whole pixels


def pixel_box(bbox: Sequence[float], pad_frac: float, width: int, height: int) -> Box | None:
    """``bbox`` ([x, y, w, h]) grown by ``pad_frac`` of its size on every side, to whole pixels inside
    the image; None when nothing of it is left."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = max(0, math.floor(x - pad_frac * w)), max(0, math.floor(y - pad_frac * h))
    x1, y1 = min(width, math.ceil(x + w + pad_frac * w)), min(height, math.ceil(y + h + pad_frac * h))
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _samples(n: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``n`` pixel centres: the cell before it, the cell after it and the weight of the latter."""
    pos = np.clip((np.arange(n) + 0.5) * cells / n - 0.5, 0, cells - 1)
    low = np.floor(pos).astype(np.int64)
    return low, np.minimum(low + 1, cells - 1), pos - low


def blur(image: np.ndarray, box: Box, cells: int) -> None:
    """Blur ``box`` (the part of it inside the image) of an HxWx3 uint8 ``image`` in place."""
    x, y, w, h = box
    region = image[max(0, y):max(0, y + h), max(0, x):max(0, x + w)]
    h, w = region.shape[:2]
    if not h or not w:
        return
    ny, nx = min(cells, h), min(cells, w)
    ey, ex = (np.arange(ny + 1) * h) // ny, (np.arange(nx + 1) * w) // nx
    sums = np.add.reduceat(np.add.reduceat(region.astype(np.int64), ey[:-1], axis=0), ex[:-1], axis=1)
    means = sums / (np.diff(ey)[:, None, None] * np.diff(ex)[None, :, None])
    ly, hy, fy = _samples(h, ny)
    lx, hx, fx = _samples(w, nx)
    rows = means[ly] * (1 - fy)[:, None, None] + means[hy] * fy[:, None, None]
    smooth = rows[:, lx] * (1 - fx)[None, :, None] + rows[:, hx] * fx[None, :, None]
    region[...] = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)


def blurred_png(image: np.ndarray, boxes: Sequence[Box], cells: int, icc_profile: bytes | None = None) -> bytes:
    """PNG bytes of ``image`` (not modified) with every box blurred, in order, carrying ``icc_profile``."""
    out = np.array(image, dtype=np.uint8, copy=True)
    for box in boxes:
        blur(out, box, cells)
    png = Image.fromarray(out, "RGB")
    if icc_profile:
        png.info["icc_profile"] = icc_profile
    return encode_png(png)


def released(data: bytes, fmt: str, boxes: Sequence[Box], cells: int,
             image: np.ndarray | None = None) -> tuple[bytes, str] | None:
    """The bytes and format a release holds for an ingested image: blurred where there are ``boxes``, else
    stripped of its metadata; None where ingest's bytes carry nothing to strip. ``image``: its decoded
    pixels, when the caller has them (one decode less). Stage redact writes this, and a replay of its
    boxes gets the same bytes."""
    if boxes:
        pixels = decode_rgb(data) if image is None else image
        return blurred_png(pixels, boxes, cells, icc_profile(data)), "PNG"
    clean = strip_metadata(data, fmt)
    return None if clean == data else (clean, fmt)


def icc_profile(data: bytes) -> bytes | None:
    """The ICC profile an encoded image carries, if any (a blurred copy keeps its colours)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.info.get("icc_profile") or None


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """``data`` (an image as ingest keeps it: JPEG or PNG) without its metadata, its pixels' bytes untouched."""
    if fmt == "JPEG":
        return _strip_jpeg(data)
    if fmt == "PNG":
        return _strip_png(data)
    raise ValueError(f"cannot strip metadata from a {fmt} image: ingest releases only JPEG and PNG (the rest it "
                     "re-encodes as PNG)")


_JFIF_KEEP = 12  # "JFIF\0", version, units, densities: the thumbnail's size and pixels follow
_APP_KEEP = {0xE0: b"JFIF\0", 0xE2: b"ICC_PROFILE\0", 0xEE: b"Adobe"}  # APPn kept, by the id their payload opens with
_EOI, _SOS, _COM = 0xD9, 0xDA, 0xFE


def _strip_jpeg(data: bytes) -> bytes:
    """Segment by segment: APPn other than JFIF, ICC and Adobe and COM dropped, JFIF's thumbnail dropped,
    everything else (tables, frame, scans with their entropy-coded data) copied; nothing after EOI."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG: no start-of-image marker")
    out, i, n = [data[:2]], 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise ValueError(f"corrupt JPEG: no marker at byte {i}")
        while i + 1 < n and data[i + 1] == 0xFF:  # fill bytes before a marker
            i += 1
        if i + 1 >= n:
            raise ValueError("corrupt JPEG: it ends inside a marker")
        marker = data[i + 1]
        if marker == _EOI:
            out.append(b"\xff\xd9")
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers carry no length
            out.append(data[i:i + 2])
            i += 2
            continue
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if i + 4 > n or end > n:
            raise ValueError(f"corrupt JPEG: segment 0x{marker:02X} at byte {i} runs past the end")
        payload = data[i + 4:end]
        if marker == _SOS:
            end = _scan_end(data, end)
            out.append(data[i:end])
        elif marker == 0xE0 and payload.startswith(_APP_KEEP[0xE0]) and len(payload) > _JFIF_KEEP + 2:
            out.append(b"\xff\xe0" + (_JFIF_KEEP + 4).to_bytes(2, "big") + payload[:_JFIF_KEEP] + b"\0\0")
        elif not (marker == _COM or 0xE0 <= marker <= 0xEF and not _kept_app(marker, payload)):
            out.append(data[i:end])
        i = end
    return b"".join(out)


def _kept_app(marker: int, payload: bytes) -> bool:
    return marker in _APP_KEEP and payload.startswith(_APP_KEEP[marker])


def _scan_end(data: bytes, i: int) -> int:
    """Where the entropy-coded data that starts at ``i`` ends: the next marker other than a stuffed 0xFF00
    or a restart marker (the end of the file when none follows)."""
    while (i := data.find(b"\xff", i)) != -1 and i + 1 < len(data):
        following = data[i + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7:
            return i
        i += 2
    return len(data)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the critical chunks and the ones that change how the pixels look; text, eXIf, tIME and the rest go
_PNG_KEEP = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP",
             b"mDCV", b"cLLI"}


def _strip_png(data: bytes) -> bytes:
    """Chunk by chunk: the chunks of ``_PNG_KEEP`` copied with their CRCs, the others dropped; nothing after IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG: no PNG signature")
    out, i = [_PNG_SIGNATURE], len(_PNG_SIGNATURE)
    while True:
        if i + 8 > len(data):
            raise ValueError("corrupt PNG: it ends before its IEND chunk")
        kind = data[i + 4:i + 8]
        end = i + 12 + int.from_bytes(data[i:i + 4], "big")
        if end > len(data):
            raise ValueError(f"corrupt PNG: chunk {kind!r} at byte {i} runs past the end")
        if kind in _PNG_KEEP:
            out.append(data[i:end])
        if kind == b"IEND":
            return b"".join(out)
        i = end
