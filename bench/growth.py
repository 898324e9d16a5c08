"""Release growth: what a Hub upload of the next version adds, under Xet-style content-defined chunking.

The Hub stores files in Xet: cut into chunks by content (a gear rolling hash), a chunk it already
holds is not uploaded again. This figure builds version 1 from the released images less one in ten
and version 2 from all of them (the same work/, the same params), chunks every release file of both,
and counts the bytes of version 2 in chunks version 1 lacks, beside the bytes of the new images (each
format that carries images adds them once: the floor). Then the same with pyarrow's own
content-defined chunking turned on for the Parquet shards (``use_content_defined_chunking``), which
groundcap leaves off: it costs build a third of its time and saves nothing here, because image bytes
are stored uncompressed and Xet finds them again on its own.

The chunker has xet-core's parameters (64-bit gear hash over the last 64 bytes, 64 KiB target, 8 KiB
minimum, 128 KiB maximum, a cut where the top 16 bits are zero) and its own random gear table: it
measures how well a file layout dedups, not the exact chunks the Hub would cut.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow.parquet as pq

from groundcap.builders import ReleaseWriter
from groundcap.pipeline.stage import Context
from groundcap.stages import build as build_stage
from pipeline import MB, released_project
from timing import best

GEAR = np.random.default_rng(0).integers(0, np.iinfo(np.uint64).max, 256, dtype=np.uint64, endpoint=True)
TARGET, MIN_CHUNK, MAX_CHUNK = 64 * 1024, 8 * 1024, 128 * 1024
_TOP = np.uint64(64 - 16)  # log2(TARGET) top bits zero: one cut per 64 KiB on average
_BLOCK = 1 << 22  # bytes hashed at a time (two uint64 arrays of it)


def _candidates(data: np.ndarray) -> np.ndarray:
    """Positions after which the gear hash of the 64 bytes ending there has its top 16 bits zero."""
    out = []
    for start in range(0, len(data), _BLOCK):
        lo = max(0, start - 63)
        gear = GEAR[data[lo:start + _BLOCK]]
        h = gear.copy()
        for k in range(1, 64):  # h_i = sum_k gear[b_(i-k)] << k: the shift pushes older bytes out
            h[k:] += gear[:-k] << np.uint64(k)
        out.append(np.flatnonzero((h[start - lo:] >> _TOP) == 0) + start + 1)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def chunks(data: bytes) -> Iterator[tuple[bytes, int]]:
    """(sha256, size) of each content-defined chunk of ``data``."""
    array = np.frombuffer(data, np.uint8)
    last = 0
    for cut in [*_candidates(array).tolist(), len(array)]:
        while cut - last > MAX_CHUNK:
            yield hashlib.sha256(data[last:last + MAX_CHUNK]).digest(), MAX_CHUNK
            last += MAX_CHUNK
        if cut - last >= MIN_CHUNK or (cut == len(array) and cut > last):
            yield hashlib.sha256(data[last:cut]).digest(), cut - last
            last = cut


def _write(dest: Path, records: list[tuple[str, dict]], run_params: dict) -> Path:
    with ReleaseWriter(dest, run_params) as writer:
        for split, record in records:
            writer.add(split, copy.deepcopy(record))
    return dest


def _upload(dest: Path, seen: set[bytes]) -> tuple[int, int]:
    """Bytes of every release file under ``dest``, and of the chunks not in ``seen`` (then added to it)."""
    total = new = 0
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        for digest, size in chunks(path.read_bytes()):
            total += size
            if digest not in seen:
                seen.add(digest)
                new += size
    return total, new


def bench_growth(tmp: Path, copies: int, photos: int | None, repeat: int, overrides: dict | None = None) -> None:
    """Version 2 (every released image of the ``copies``x project) against version 1 (one in ten fewer)."""
    root, run_params = released_project(tmp, copies, photos, overrides)
    records = list(build_stage.records(Context(root=root, params=run_params, progress=False)))
    dropped = set(range(5, len(records), 10)) or {len(records) // 2}  # one in ten, at least one
    v1 = [r for i, r in enumerate(records) if i not in dropped]
    added = sum(len(records[i][1]["image"]["bytes"]) for i in dropped) / MB
    copies_of_images = 1 + ("webdataset" in run_params["build"]["formats"])  # data/, and wds/ when opted in
    print(f"release growth, version 2 = version 1 + {len(records) - len(v1)} images ({added:.1f} MB) of "
          f"{len(records)}; the floor is those bytes once per format that carries images "
          f"({copies_of_images}x: {copies_of_images * added:.1f} MB):")
    cdc = functools.partial(pq.ParquetWriter, use_content_defined_chunking=True)
    for name, patch in (("as groundcap writes it", None), ("with pyarrow's content-defined chunking", cdc)):
        with mock.patch.object(pq, "ParquetWriter", patch) if patch else contextlib.nullcontext():
            seen: set[bytes] = set()
            _upload(_write(tmp / "growth-v1", v1, run_params), seen)
            t = best(lambda: _write(tmp / "growth-v2", records, run_params), repeat)
            total, new = _upload(tmp / "growth-v2", seen)
        print(f"  {name}: version 2 is {total / MB:.1f} MB, its upload adds {new / MB:.1f} MB "
              f"({new / MB / added:.1f}x the new images' bytes); writing it takes {t:.2f} s")
