"""Grounded text: phrases that point at regions, written ``<rN>phrase</rN>`` (N = a region_id).

The one place that writes, parses, unwraps and renders these references, so the scene captioners,
QA and the Pancap-style rendering agree on the syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

_REF = re.compile(r"<r(\d+)>(.*?)</r\1>", re.DOTALL)


def ref(region_id: int, phrase: str) -> str:
    if "<r" in phrase or "</r" in phrase:
        raise ValueError(f"phrase must not contain reference tags: {phrase!r}")
    return f"<r{region_id}>{phrase}</r{region_id}>"


def references(text: str) -> list[tuple[int, str]]:
    """(region_id, phrase) for every reference, in order of appearance."""
    return [(int(m.group(1)), m.group(2)) for m in _REF.finditer(text)]


def mentions(text: str) -> list[tuple[int, int, int, str]]:
    """(start, end, region_id, phrase) for every reference, in order: where each sits in ``text``."""
    return [(m.start(), m.end(), int(m.group(1)), m.group(2)) for m in _REF.finditer(text)]


def is_well_formed(text: str) -> bool:
    """True when every ``<rN>``/``</rN>`` tag belongs to a matched, non-nested pair."""
    leftover = _REF.sub(lambda m: m.group(2), text)
    return "<r" not in leftover and "</r" not in leftover and all("<r" not in p for _, p in references(text))


def unwrap(text: str, keep: Iterable[int]) -> str:
    """Drop the tags of references whose region is not in ``keep``, leaving their phrase as plain text."""
    keep = set(keep)
    return _REF.sub(lambda m: m.group(0) if int(m.group(1)) in keep else m.group(2), text)


def plain(text: str) -> str:
    return unwrap(text, ())


def render_boxes(text: str, boxes: Mapping[int, Sequence[float]], width: int, height: int) -> str:
    """Pancap style: ``phrase [x1, y1, x2, y2]`` with coordinates normalized to 0-1, 3 decimals."""

    def box(m: re.Match) -> str:
        x, y, w, h = boxes[int(m.group(1))]
        coords = (x / width, y / height, (x + w) / width, (y + h) / height)
        return f"{m.group(2)} [{', '.join(f'{min(max(c, 0.0), 1.0):.3f}' for c in coords)}]"

    return _REF.sub(box, text)
