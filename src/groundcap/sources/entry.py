"""What every source kind yields: one file, named for reports, read lazily and with a byte limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Reader = Callable[[int], bytes]
GivenLoader = Callable[[], list[dict[str, Any]]]


@dataclass(frozen=True)
class SourceFile:
    """One candidate image. ``name`` is what reports and provenance show (relative to a folder, the line
    of a list file, ``shard.tar/member`` of a tar); ``read(limit)`` returns at most ``limit`` bytes, so a
    huge file is refused without being read whole.

    Annotated sources (SA-1B, COCO) also give ``given``: a loader of the image's masks, each
    ``{"segmentation": COCO RLE, "label": str, "source": str, "predicted_iou": float | None,
    "stability_score": float | None}``, called only once the image is accepted; ``license`` is the
    image's licence where the source states one."""

    name: str
    read: Reader
    license: str | None = None
    given: GivenLoader | None = None
