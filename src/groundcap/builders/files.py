"""The files of one split of one format: written under hidden temporary names, published together.

A shard only gets its final name once the whole split is written (Parquet's ``-of-NNNNN`` needs the
count), so the Hub globs and readers never see a half-written or partial set of shards.

Durability is settled once, in :meth:`SplitFiles.publish`, for every file of the build: all temporary files
are fsynced together (in threads: the kernel writes them back side by side and one journal commit covers
many; one at a time, as each closed, the eight files of a default release took 5x as long, bench/run.py
--only build), then renamed, then each folder is fsynced once so the renames last. A crash before the
renames leaves only hidden temporaries; after any rename, the file under that name is whole, because its
bytes were on disk before it was renamed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from groundcap.storage import atomic


class SplitFiles:
    def __init__(self, directory: Path, split: str, suffix: str):
        self.directory, self.split, self.suffix = directory, split, suffix
        self.tmp_paths: list[Path] = []
        self.fh: BinaryIO | None = None

    def open_next(self) -> BinaryIO:
        path = atomic.temporary(self.directory / f"{self.split}-{len(self.tmp_paths):05d}{self.suffix}")
        self.tmp_paths.append(path)
        self.fh = open(path, "wb")
        return self.fh

    def close_current(self) -> None:
        """Close the open file (its format writer must be closed first); ``publish`` fsyncs it."""
        self.fh.close()
        self.fh = None

    def finals(self, name: Callable[[int, int], str]) -> list[tuple[Path, Path]]:
        """``(temporary, final)`` of every shard written, shard ``i`` of ``n`` named ``name(i, n)``."""
        n = len(self.tmp_paths)
        return [(tmp, self.directory / name(i, n)) for i, tmp in enumerate(self.tmp_paths)]

    @staticmethod
    def publish(pairs: list[tuple[Path, Path]]) -> list[Path]:
        """Fsync every temporary file, rename each to its final name, fsync their folders; the final paths."""
        atomic.fsync_all([tmp for tmp, _ in pairs])
        for tmp, final in pairs:
            os.replace(tmp, final)
        atomic.fsync_all(sorted({final.parent for _, final in pairs}))
        return [final for _, final in pairs]

    def discard(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        for path in self.tmp_paths:
            path.unlink(missing_ok=True)
