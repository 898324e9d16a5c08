"""Divide and conquer for scene captions (PancapEngine): an image with more regions than a composer
can hold in one prompt is split into parts, each captioned on its own, then fused.

The split bisects the longer side, recursively, until every part holds at most ``limit`` regions or
``max_depth`` is reached; a region belongs to the part holding the centre of its box.
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


def split(regions: list[dict], width: int, height: int, limit: int, max_depth: int = 2) -> list[Part]:
    """Parts covering the image, in reading order; a single part when the regions fit ``limit``."""

    def go(box: tuple[int, int, int, int], names: tuple[str, ...], members: list[dict], depth: int) -> list[Part]:
        if len(members) <= limit or depth >= max_depth:
            return [Part(_name(names), box, members)] if members else []
        x, y, w, h = box
        vertical = h > w  # split the longer side
        if vertical:
            boxes = ((x, y, w, h // 2), (x, y + h // 2, w, h - h // 2))
        else:
            boxes = ((x, y, w // 2, h), (x + w // 2, y, w - w // 2, h))
        out = []
        for sub, name in zip(boxes, _HALVES[vertical], strict=True):
            out += go(sub, (*names, name), [r for r in members if _inside(r, sub)], depth + 1)
        return out

    return go((0, 0, width, height), (), list(regions), 0)


def _name(names: tuple[str, ...]) -> str:
    if not names:
        return "whole image"
    if len(names) == 1:
        return f"{names[0]} half"
    ordered = sorted(names, key=lambda n: n not in ("top", "bottom"))  # "top left", not "left top"
    return f"{' '.join(ordered)} quarter" if len(names) == 2 else " ".join(ordered) + " part"
