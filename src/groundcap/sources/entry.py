"""What every source kind yields: one file, named for reports, read lazily and with a byte limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Reader = Callable[[int], bytes]
GivenLoader = Callable[[], list[dict[str, Any]]]


class Refused(Exception):
    """A source entry the policy will not read, or a read that broke one of its bounds; the message is the
    reason ``reports/rejects.parquet`` records."""


@dataclass(frozen=True)
class Local:
    """Where a file's bytes lie on this machine's disk: ``path`` (as the source named it, or ``sample:<file>``
    for the bundled sample) from byte ``offset`` (a tar member's). Ingest keeps this in place of the bytes
    (``ingest.images: reference``); ``sources.reference`` reads them back."""

    path: str
    offset: int = 0


def _never_read(limit: int) -> bytes:
    raise Refused("refused before reading")


@dataclass(frozen=True)
class SourceFile:
    """One candidate image. ``name`` is what reports and provenance show (relative to a folder, the line
    of a list file with credentials masked, ``shard.tar/member`` of a tar); ``read(limit)`` returns at most
    ``limit`` bytes, so a huge file is refused without being read whole. ``refused`` says why the entry is
    rejected without ever being opened (not a regular file, a link out of its folder, a protocol the
    source policy does not allow).

    Annotated sources (SA-1B, COCO) also give ``given``: a loader of the image's masks, each
    ``{"segmentation": COCO RLE, "label": str, "source": str, "predicted_iou": float | None,
    "stability_score": float | None}``, called only once the image is accepted; ``license`` is the
    image's licence where the source states one. ``local``: where its bytes lie on local disk, for a source
    read from it (None for remote ones: their bytes are kept, as a re-fetch is neither cheap nor reproducible)."""

    name: str
    read: Reader = _never_read
    refused: str | None = None
    license: str | None = None
    given: GivenLoader | None = None
    local: Local | None = None
