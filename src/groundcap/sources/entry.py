"""What every source kind yields: one file, named for reports, read lazily and with a byte limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Reader = Callable[[int], bytes]


class Refused(Exception):
    """A source entry the policy will not read, or a read that broke one of its bounds; the message is the
    reason ``reports/rejects.parquet`` records."""


def _never_read(limit: int) -> bytes:
    raise Refused("refused before reading")


@dataclass(frozen=True)
class SourceFile:
    """One candidate image. ``name`` is what reports and provenance show (relative to a folder, the line
    of a list file, credentials masked); ``read(limit)`` returns at most ``limit`` bytes, so a huge file is
    refused without being read whole. ``refused`` says why the entry is rejected without ever being opened
    (not a regular file, a link out of its folder, a protocol the source policy does not allow)."""

    name: str
    read: Reader = _never_read
    refused: str | None = None
