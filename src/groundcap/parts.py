"""Directories of Parquet parts: the tables that pass between stages.

A stage's output is ``<dir>/part-NNNNN.parquet``; part ``k`` of every stage holds the same images in
the same order, so a stage joins its inputs part by part without loading the dataset. Writes go to a
temporary name and are renamed, so an interrupted run never leaves a half-written part behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_PART = re.compile(r"^part-(\d{5})\.parquet$")


def part_path(directory: Path, index: int) -> Path:
    return Path(directory) / f"part-{index:05d}.parquet"


def list_parts(directory: Path) -> list[int]:
    """Indices of the finished parts in ``directory``, ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist: run the stage that writes it first")
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _PART.match(p.name)))


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically (temporary name, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", write_statistics=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_part(rows: list[dict], schema: pa.Schema, directory: Path, index: int) -> Path:
    path = part_path(directory, index)
    write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def read_part(directory: Path, index: int, columns: Iterable[str] | None = None) -> list[dict]:
    table = pq.read_table(part_path(directory, index), columns=list(columns) if columns else None)
    return table.to_pylist()


def reset_dir(directory: Path) -> Path:
    """Empty ``directory`` (a stage rewrites its whole output) and return it."""
    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory
