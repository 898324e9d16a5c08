"""Directories of Parquet parts: the tables that pass between stages.

A stage's output is ``<dir>/part-NNNNN.parquet``; part ``k`` of every stage holds the same images in
the same order, so a stage joins its inputs part by part without loading the dataset. Writes go to a
temporary name and are renamed, then a completion marker ``part-NNNNN.done`` (the part's SHA-256 and
what the writer adds: ``groundcap.pipeline.resume``) is written the same way, last: a part counts as finished
only once its marker exists, so a run killed at any moment leaves either a finished part or none.

A folder may be a ``remote.RemotePath`` (a shared store that workers on several nodes reach): there a part
is one PUT (whole or absent, as S3 makes it; no rename exists) and its marker a second one, written after.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from groundcap.errors import StageInputError
from groundcap.storage import atomic
from groundcap.storage.remote import RemotePath

_PART = re.compile(r"^part-(\d{5,})\.(parquet|done)$")  # five digits, more past part 99,999 (a million images
#                                                      at 8 per part): the index is read as a number, never cut

Folder = Path | RemotePath


def _folder(directory: str | Folder) -> Folder:
    return directory if isinstance(directory, RemotePath) else Path(directory)


def part_path(directory: Folder, index: int) -> Folder:
    return _folder(directory) / f"part-{index:05d}.parquet"


def marker_path(directory: Folder, index: int) -> Folder:
    return _folder(directory) / f"part-{index:05d}.done"


def part_index(name: str) -> int | None:
    """The index of a part's file or marker named ``name``, or None for any other file."""
    m = _PART.match(name)
    return int(m.group(1)) if m else None


def list_parts(directory: Folder) -> list[int]:
    """Indices of the finished parts (those with a completion marker) in ``directory``, ascending (one
    listing: on a store, a request per part would cost a round trip each)."""
    directory = _folder(directory)
    if not directory.is_dir():
        raise StageInputError(f"{directory} does not exist: run the stage that writes it first")
    found: dict[str, set[int]] = {"parquet": set(), "done": set()}
    for path in directory.iterdir():
        if m := _PART.match(path.name):
            found[m.group(2)].add(int(m.group(1)))
    return sorted(found["parquet"] & found["done"])


@contextmanager
def _opened(path: Folder) -> Iterator[Path | io.IOBase]:
    """What pyarrow reads: the local path, or the remote file opened (its footer and columns read by range)."""
    if isinstance(path, RemotePath):
        with path.open("rb") as fh:
            yield fh
    else:
        yield path


def write_table(table: pa.Table, path: Folder) -> str:
    """Write a Parquet file atomically (temporary name, fsync, rename; on a store, one PUT); its SHA-256."""
    if isinstance(path, RemotePath):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd", write_statistics=False)
        path.write_bytes(buffer.getvalue())
        return hashlib.sha256(buffer.getvalue()).hexdigest()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(path, durable=True) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return digest


def write_part(rows: list[dict], schema: pa.Schema, directory: Folder, index: int,
               marker: dict | None = None) -> Folder:
    """Write part ``index``, then its completion marker (its SHA-256, its row count, plus ``marker``)."""
    path = part_path(directory, index)
    digest = write_table(pa.Table.from_pylist(rows, schema=schema), path)
    atomic.write_text(marker_path(directory, index),
                      json.dumps({"sha256": digest, "rows": len(rows), **(marker or {})}, sort_keys=True), durable=True)
    return path


def read_marker(directory: Folder, index: int) -> dict | None:
    """The completion marker of part ``index``, or None when the part is not finished."""
    try:
        return json.loads(marker_path(directory, index).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def read_table(directory: Folder, index: int, columns: Iterable[str] | None = None) -> pa.Table:
    """Part ``index``, every column or only ``columns``."""
    with _opened(part_path(directory, index)) as source:
        return pq.read_table(source, columns=list(columns) if columns else None)


def read_part(directory: Folder, index: int, columns: Iterable[str] | None = None) -> list[dict]:
    """Part ``index``'s rows, every column or only ``columns``."""
    return read_table(directory, index, columns).to_pylist()


def num_rows(directory: Folder, index: int, marker: dict | None = None) -> int:
    """How many rows part ``index`` holds: from its ``marker`` when given and it says (no Parquet file opened),
    else from the part's footer (markers written before they said)."""
    if marker is not None and "rows" in marker:
        return int(marker["rows"])
    with _opened(part_path(directory, index)) as source:
        return pq.ParquetFile(source).metadata.num_rows


def column_names(directory: Folder, index: int) -> list[str]:
    """The columns of part ``index`` (read from its footer)."""
    with _opened(part_path(directory, index)) as source:
        return pq.read_schema(source).names


def reset_dir(directory: Path) -> Path:
    """Empty ``directory`` (a stage rewrites its whole output) and return it."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory
