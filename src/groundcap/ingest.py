"""Validate, normalize and identify images; one bad file is a recorded rejection, never a crash.

An accepted image is decoded fully (catching truncation), turned upright by its EXIF orientation,
converted to 8-bit RGB and given a content id. Its original bytes are kept when they already are an
upright RGB JPEG/PNG; otherwise it is re-encoded once, losslessly, as PNG.

The pixel and byte limits bound how much a file may decode to, not how long decoding takes (a
decoder's worst cases, a crafted file). So the ingest stage validates through :class:`Decoder`, in a
child process, bounded by ``ingest.source_policy.decode_timeout_s``; a decode past it becomes a
rejection and the child is killed: a thread could only be abandoned, still burning a core and holding
its memory. A decoder that crashes the child is a rejection too. Same code, same bytes: what the child
returns is what :func:`validate` returns in process.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

KEEP_FORMATS = {"JPEG", "PNG"}


@dataclass(frozen=True)
class Limits:
    min_side: int
    max_pixels: int
    max_bytes: int
    animated: str  # first_frame | reject

    @classmethod
    def from_params(cls, section: dict) -> Limits:
        return cls(int(section["min_side"]), int(section["max_pixels"]), int(section["max_bytes"]), section["animated"])


class Rejected(Exception):
    """Why a file cannot enter the dataset (the message is the recorded reason)."""


def image_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def validate(data: bytes, limits: Limits) -> dict:
    """Return an IMAGE record (without ``image_id``/``source_path``) or raise :class:`Rejected`."""
    if not data:
        raise Rejected("empty file (0 bytes)")
    if len(data) > limits.max_bytes:
        raise Rejected(f"file larger than ingest.max_bytes={limits.max_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise Rejected("not an image Pillow can identify") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Rejected(f"decompression bomb guard: {exc}") from None
        except Exception as exc:  # Pillow raises many types on malformed headers
            raise Rejected(f"unreadable image header: {type(exc).__name__}: {exc}") from None
        return _normalize(img, data, limits)


def check_given(given: list[dict], record: dict) -> list[dict]:
    """``given`` masks of an accepted image, or :class:`Rejected` when they cannot line up with its pixels:
    a mask of another size, or an image ingest turned upright (the masks were drawn on the stored pixels)."""
    if given and "exif_transpose" in record["normalized"]:
        raise Rejected("given masks on an EXIF-rotated image: they would not line up with the upright pixels")
    for mask in given:
        if list(mask["segmentation"]["size"]) != [record["height"], record["width"]]:
            raise Rejected(f"given mask of size {mask['segmentation']['size']} (h, w) for a "
                           f"{record['width']}x{record['height']} image")
    return given


def _normalize(img: Image.Image, data: bytes, limits: Limits) -> dict:
    width, height = img.size
    if width * height > limits.max_pixels:
        raise Rejected(f"too large: {width}x{height} exceeds ingest.max_pixels={limits.max_pixels}")
    if min(width, height) < limits.min_side:
        raise Rejected(f"too small: {width}x{height}, shorter side below ingest.min_side={limits.min_side}")
    notes: list[str] = []
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        if limits.animated == "reject":
            raise Rejected(f"animated image with {frames} frames (ingest.animated=reject)")
        notes.append(f"first_of_{frames}_frames")
    fmt = img.format
    try:
        img.load()
    except Exception as exc:
        raise Rejected(f"corrupt or truncated image data: {type(exc).__name__}: {exc}") from None
    upright = ImageOps.exif_transpose(img)
    if _orientation(img) not in (None, 1):
        notes.append("exif_transpose")
    rgb, mode_note = _to_rgb(upright)
    if mode_note:
        notes.append(mode_note)
    if notes or fmt not in KEEP_FORMATS:
        if fmt not in KEEP_FORMATS:
            notes.append(f"reencoded_from_{fmt}")
        data = encode_png(rgb)
        fmt = "PNG"
    return {"format": fmt, "width": rgb.width, "height": rgb.height, "bytes": data, "normalized": notes}


def _orientation(img: Image.Image) -> int | None:
    try:
        return img.getexif().get(0x0112)
    except Exception:
        return None


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB; alpha is flattened onto white, high bit depths are scaled (not clipped)."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            top = max(float(arr.max()), 1e-12)
        else:
            top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB"), f"{mode}_to_rgb"
    if mode in {"RGBA", "LA", "PA"} or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode}_alpha_on_white"
    return img.convert("RGB"), f"{mode}_to_rgb"


def encode_png(img: Image.Image) -> bytes:
    """Lossless PNG, the one encoding groundcap writes images in (ingest's normalized copies, redact's blurred ones)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class Decoder:
    """:func:`validate` in a child process, each call bounded by ``timeout_s``; use it as a context manager.

    The child starts on the first call and says when it is ready, so its start-up never counts against a
    file; it is killed after a decode that runs too long, and the next call starts a new one. It is a
    fresh interpreter that imports this module only: ``fork`` is unsafe beside the fetch threads, and
    multiprocessing's ``spawn`` would import the parent's ``__main__`` too (the whole CLI, seconds more).
    """

    STARTUP_S = 300.0  # importing Pillow and numpy on a loaded machine, not a decode

    def __init__(self, limits: Limits, timeout_s: float) -> None:
        self.limits, self.timeout_s = limits, timeout_s
        self._proc = self._conn = None

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def validate(self, data: bytes) -> dict:
        """:func:`validate` of ``data``; :class:`Rejected` also when decoding takes longer than ``timeout_s``."""
        conn = self._started()
        try:
            conn.send_bytes(data)
            if not conn.poll(self.timeout_s):
                self._stop(grace_s=0)
                raise Rejected(f"decoding took longer than ingest.source_policy.decode_timeout_s={self.timeout_s:g} s;"
                               " abandoned")
            kind, value = conn.recv()
        except (EOFError, OSError):  # the child died: a decoder's crash, or the kernel's OOM killer
            code = self._stop()
            raise Rejected(f"the decoder crashed on this file (its process ended with exit code {code})") from None
        if kind == "rejected":
            raise Rejected(value)
        if kind == "error":  # a bug, not the file: fail as validate would, with the child's traceback
            raise RuntimeError(f"decoding failed in the decoder process:\n{value}")
        if value["bytes"] is None:  # kept as they came: not sent back
            value["bytes"] = data
        return value

    def _started(self) -> Connection:
        if self._proc is None:
            ours, theirs = socket.socketpair()
            # the parent's sys.path, in its order, as multiprocessing gives its children
            self._proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(theirs.fileno()), json.dumps(sys.path)],
                                          pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            theirs.close()
            self._conn = Connection(ours.detach())
            try:
                self._conn.send(self.limits)
                ready = self._conn.poll(self.STARTUP_S) and self._conn.recv() == "ready"
            except (EOFError, OSError):
                ready = False
            if not ready:
                code = self._stop(grace_s=0)
                raise RuntimeError(f"the decoder process did not start within {self.STARTUP_S:g} s (exit code {code})")
        return self._conn

    def _stop(self, grace_s: float = 5.0) -> int | None:
        """End the child (killed if it is not gone after ``grace_s``); its exit code."""
        if self._proc is None:
            return None
        self._conn.close()  # a waiting child sees the end of its input and exits
        try:
            self._proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        code, self._proc, self._conn = self._proc.returncode, None, None
        return code


_CHILD = ("import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
          "from groundcap.ingest import serve; serve(int(sys.argv[1]))")


def serve(fd: int) -> None:
    """The decoder process (:class:`Decoder`): validate each file sent on socket ``fd`` until the parent closes it."""
    conn = Connection(fd)
    limits = conn.recv()
    Image.init()  # every format's plugin imported now: start-up, not any file's decode
    conn.send("ready")
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
            record = validate(data, limits)
        except Rejected as why:
            conn.send(("rejected", str(why)))
            continue
        except Exception:
            conn.send(("error", traceback.format_exc()))
            continue
        if record["bytes"] is data:
            record["bytes"] = None
        conn.send(("ok", record))


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode bytes that ingest accepted into an HxWx3 uint8 array (already upright RGB)."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))
