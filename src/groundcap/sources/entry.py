"""What every source kind yields: one file, named for reports, read lazily and with a byte limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Reader = Callable[[int], bytes]


@dataclass(frozen=True)
class SourceFile:
    """One candidate image. ``name`` is what reports and provenance show (relative to a folder, the line
    of a list file); ``read(limit)`` returns at most ``limit`` bytes, so a huge file is refused without
    being read whole."""

    name: str
    read: Reader
