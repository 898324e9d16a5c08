"""Files written whole or not at all, under temporary names that belong to one process.

Every file groundcap writes goes to a hidden temporary name beside it and is then renamed over it, so
a reader, or a run killed halfway, never sees half a file. The temporary name holds the writer's pid
and a random part: two writers of the same file (two runs on one folder, which the work-folder lock
refuses, or two publishes) never write into, rename or delete each other's temporary file, where a
shared name made one of them fail (``release/plots/.regions_per_image.png.tmp`` vanished under it).
Temporary files are hidden (``.name.PID-RANDOM.tmp``): the manifest and the Hub skip them, and
:func:`is_temporary` finds those a killed run left.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from groundcap.storage.remote import RemotePath


def temporary(path: str | Path) -> Path:
    """A hidden temporary name beside ``path``, unique to this process and this call."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`temporary` (or of an older groundcap, ``.name.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder: its entries, e.g. renames into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_all(paths: list[Path]) -> None:
    """:func:`fsync` every path, side by side in threads (the kernel writes them back together)."""
    with ThreadPoolExecutor(max(1, min(len(paths), 16))) as pool:
        list(pool.map(fsync, paths))


@contextmanager
def replacing(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block ends
    without error (fsynced first when ``durable``), removed when it raises."""
    tmp = temporary(path)
    try:
        yield tmp
        if durable:
            fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path | RemotePath, text: str, *, durable: bool = False) -> Path | RemotePath:
    """Write ``text`` (UTF-8) to ``path`` atomically (on a store: one PUT, whole or absent); ``path``."""
    if isinstance(path, RemotePath):
        path.write_text(text)
        return path
    with replacing(path, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
