"""Ingest's references to local source files (``ingest.images: reference``), and the one reader that turns them
back into bytes for every stage that needs pixels.

Where a source lies on local disk (a folder, a list of local paths, the bundled sample, local SA-1B or WebDataset
tars, a local COCO folder) and ingest kept an image's bytes as they came, ``work/ingest`` holds where they are
(``schema.REFERENCE``: path, offset, size, SHA-256) instead of a second copy. :func:`resolve` reads them back and
checks their SHA-256: a source file that changed or is gone since ingest stops the stage with a
:class:`SourceChanged` naming the image and the file, never a substitute. ``groundcap hydrate`` re-reads a
source too, but by streaming all of it and replaying ingest and the privacy pass on each entry; the stages need
random access to a part's images, so this reads each at its recorded place (``local.open_regular``).

What it returns is the recorded bytes or an error, never other bytes, so no code here can change what a stage
writes: ``code_deps`` does not follow this module (a map stage's fingerprint does not grow by every source kind).
Import it as ``from groundcap.sources.reference import ...``, so that the closure does not reach ``sources``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from groundcap.errors import SourceError
from groundcap.sources import local, sample
from groundcap.storage import parts


class SourceChanged(SourceError):
    """A referenced image's source file is missing, unreadable or holds other bytes than ingest read."""


def _path(recorded: str, root: Path) -> Path:
    if recorded.startswith(sample.PREFIX):
        return sample.data_dir() / recorded.removeprefix(sample.PREFIX)
    return Path(recorded) if os.path.isabs(recorded) else Path(root) / recorded


@contextmanager
def _opened(ref: dict, root: Path, image_id: str) -> Iterator[BinaryIO]:
    """The source file ``ref`` names, at its offset; :class:`SourceChanged` if it cannot be opened or read."""
    path = _path(ref["path"], root)
    try:
        with local.open_regular(str(path)) as fh:
            fh.seek(ref["offset"])
            yield fh
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or exc})"
        raise SourceChanged(f"image {image_id}: its source file {path} {why}. Ingest kept a reference to it "
                            "(ingest.images: reference): restore the file, or rerun from ingest") from None


def _check(data: bytes | memoryview, ref: dict, root: Path, image_id: str) -> None:
    if len(data) != ref["size"] or hashlib.sha256(data).hexdigest() != ref["sha256"]:
        raise SourceChanged(f"image {image_id}: its source file {_path(ref['path'], root)} changed since ingest "
                            "(SHA-256 or size differ from what ingest recorded); nothing is substituted: restore the "
                            "file, or rerun from ingest")


def read(ref: dict, root: Path, image_id: str) -> bytes:
    """The bytes ``ref`` points at, checked against its size and SHA-256; :class:`SourceChanged` otherwise."""
    with _opened(ref, root, image_id) as fh:
        data = fh.read(ref["size"])
    _check(data, ref, root, image_id)
    return data


def resolve(table: pa.Table, root: Path) -> pa.Table:
    """``table`` (columns of ``work/ingest``) with every referenced image's bytes in ``bytes``, read from its source
    (``root``: the run's folder, relative paths' base), and without the ``reference`` column."""
    if "reference" not in table.column_names:
        return table
    refs = table["reference"]
    if "bytes" in table.column_names and refs.null_count < len(refs):
        data = _gathered(table["bytes"].to_pylist(), refs.to_pylist(), table["image_id"].to_pylist(), root)
        table = table.set_column(table.column_names.index("bytes"), "bytes", data)
    return table.drop_columns(["reference"])


_ARRAY_BYTES = 2**31 - 1  # what one binary array holds (32-bit offsets)


def _gathered(own: list, refs: list, ids: list, root: Path) -> pa.ChunkedArray:
    """Every row's bytes, its own or read from its source (checked), each read straight into the data buffer of a
    binary array (a list of Python bytes made an array copies each image twice more); a new array past 2 GiB."""
    sizes = [r["size"] if r is not None else 0 if b is None else len(b) for b, r in zip(own, refs, strict=True)]
    return pa.chunked_array([_binary(own, refs, ids, root, sizes, rows) for rows in _runs(sizes)], pa.binary())


def _runs(sizes: list[int]) -> Iterator[range]:
    """Consecutive rows whose sizes add up to at most what one binary array holds (one row at least)."""
    start = 0
    while start < len(sizes):
        end, total = start + 1, sizes[start]
        while end < len(sizes) and total + sizes[end] <= _ARRAY_BYTES:
            total, end = total + sizes[end], end + 1
        yield range(start, end)
        start = end


def _binary(own: list, refs: list, ids: list, root: Path, sizes: list[int], rows: range) -> pa.Array:
    """One binary array of ``rows``: null where a row has neither bytes nor a reference."""
    offsets = np.concatenate([[0], np.cumsum([sizes[k] for k in rows])]).astype(np.int32)
    data = bytearray(int(offsets[-1]))
    view = memoryview(data)
    for k, start, end in zip(rows, offsets[:-1], offsets[1:], strict=True):
        at = view[start:end]
        if refs[k] is not None:
            with _opened(refs[k], root, ids[k]) as fh:
                got = fh.readinto(at)
            _check(at[:got], refs[k], root, ids[k])
        elif own[k] is not None:
            at[:] = own[k]
    valid = pa.array([refs[k] is not None or own[k] is not None for k in rows]).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), len(rows), [valid, pa.py_buffer(offsets), pa.py_buffer(data)])


def read_part(directory, index: int, columns: Iterable[str] | None, root: Path) -> pa.Table:
    """Part ``index`` of a stage table, every column or ``columns``, with ingest's referenced bytes resolved."""
    wanted = list(columns) if columns else None
    if not wanted or "bytes" not in wanted or "reference" not in parts.column_names(directory, index):
        return resolve(parts.read_table(directory, index, wanted), root)
    extra = [name for name in ("image_id", "reference") if name not in wanted]  # what resolving needs
    return resolve(parts.read_table(directory, index, [*wanted, *extra]), root).select(wanted)
