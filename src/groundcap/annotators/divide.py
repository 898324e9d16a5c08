"""Divide and conquer for scene captions (PancapEngine): an image with more regions than a composer
can hold in one prompt is split into parts, each captioned on its own, then fused.

The split bisects the longer side, recursively (halves, quarters, eighths, ...), until every part holds at
most ``limit`` regions or a half would be shorter than ``min_side`` pixels on its longer side (regions
whose box centres crowd into a few pixels cannot be parted); a region belongs to the part holding the
centre of its box.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str  # "left half", "top right quarter", ...
    box: tuple[int, int, int, int]  # x, y, w, h in the image
    regions: list[dict]


def _centre(region: dict) -> tuple[float, float]:
    x, y, w, h = region["bbox"]
    return x + w / 2, y + h / 2


def _inside(region: dict, box: tuple[int, int, int, int]) -> bool:
    cx, cy = _centre(region)
    x, y, w, h = box
    return x <= cx < x + w and y <= cy < y + h


_HALVES = {False: ("left", "right"), True: ("top", "bottom")}


MIN_SIDE = 28  # px: the smallest side a VLM processor takes (``vlm.chat.MIN_SIDE``)


def split(regions: list[dict], width: int, height: int, limit: int, min_side: int = MIN_SIDE) -> list[Part]:
    """Parts covering the image, in reading order; a single part when the regions fit ``limit``."""

    def go(box: tuple[int, int, int, int], names: tuple[str, ...], members: list[dict]) -> list[Part]:
        x, y, w, h = box
        if len(members) <= limit or max(w, h) // 2 < min_side:
            return [Part(_name(names, box, width, height), box, members)] if members else []
        vertical = h > w  # split the longer side
        if vertical:
            boxes = ((x, y, w, h // 2), (x, y + h // 2, w, h - h // 2))
        else:
            boxes = ((x, y, w // 2, h), (x + w // 2, y, w - w // 2, h))
        out = []
        for sub, name in zip(boxes, _HALVES[vertical], strict=True):
            out += go(sub, (*names, name), [r for r in members if _inside(r, sub)])
        return out

    return go((0, 0, width, height), (), list(regions))


_FRACTIONS = {2: "quarter", 3: "eighth", 4: "sixteenth", 5: "thirty-second", 6: "sixty-fourth"}


def _name(names: tuple[str, ...], box: tuple[int, int, int, int], width: int, height: int) -> str:
    """"whole image", "left half", "top left quarter"; other parts by where they span, in percent of the
    image's width and height ("eighth at x 0-25%, y 0-50%"), since "top left left" names nothing."""
    if not names:
        return "whole image"
    if len(names) == 1:
        return f"{names[0]} half"
    if len(names) == 2 and (names[0] in ("top", "bottom")) != (names[1] in ("top", "bottom")):
        ordered = sorted(names, key=lambda n: n not in ("top", "bottom"))  # "top left", not "left top"
        return f"{' '.join(ordered)} quarter"
    x, y, w, h = box
    span = f"x {_pct(x, width)}-{_pct(x + w, width)}%, y {_pct(y, height)}-{_pct(y + h, height)}%"
    return f"{_FRACTIONS.get(len(names), f'1/{2 ** len(names)} part')} at {span}"


def _pct(v: int, whole: int) -> str:
    return f"{round(100 * v / whole, 1):g}"
