"""Checks of what an annotation file or a dataset row says, before it is used as a key, a size or a path.

Annotated sources (COCO, SA-1B, Hub datasets) are as untrusted as a list file: an id may be a float or a
list, a size a string, a file name ``../../x.jpg``. Each check raises :class:`Invalid` with the reason
ingest records (masks are checked by :func:`groundcap.masks.from_segmentation`); :func:`confined` refuses a
path a source names outside its own folder, as a folder source refuses a link out of it.
"""

from __future__ import annotations

import math
import os
import posixpath

from groundcap.masks import MAX_SIDE
from groundcap.sources.policy import LINK_OUT, LOCAL, SourcePolicy, protocol_of

MAX_ID = 2**63 - 1  # ids are SQLite keys (COCO's index) and Arrow int64s


class Invalid(ValueError):
    """A value of the wrong type or out of bounds; the message names it and says what was expected."""


def ident(value, what: str) -> int:
    """An id: an integer from 0 to ``MAX_ID`` (``1.0``, ``"1"`` and ``true`` are not ids)."""
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise Invalid(f"{what} {_show(value)} is not an integer from 0 to 2**63-1")
    return value


def side(value, what: str) -> int:
    """An image side in pixels: an integer from 1 to ``masks.MAX_SIDE``."""
    if type(value) is not int or not 0 < value <= MAX_SIDE:
        raise Invalid(f"{what} {_show(value)} is not an integer from 1 to {MAX_SIDE}")
    return value


def score(value, what: str) -> float | None:
    """An optional finite number (a model's quality estimate)."""
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise Invalid(f"{what} {_show(value)} is not a finite number")
    return float(value)


def text(value, what: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"{what} {_show(value)} is not a non-empty string")
    return value


def confined(root: str, path: str, policy: SourcePolicy) -> str:
    """What to read for ``path`` (relative to ``root``, or absolute) of the source at ``root``; :class:`Invalid`
    unless it stays inside ``root`` once ``..`` is resolved, names no protocol chain (``::``), and, for a local
    ``root``, does not lead out of it through a link (unless the policy follows links)."""
    if "::" in path or "\0" in path:
        raise Invalid(f"{_show(path)}: a path naming a protocol chain or a NUL byte; never opened")
    if protocol_of(root) != LOCAL:
        joined = posixpath.normpath(f"{root.rstrip('/')}/{path}")
        if not _within(joined, posixpath.normpath(root)):
            raise Invalid(f"{_show(path)}: a path out of the source's folder; never opened")
        return f"{root.rstrip('/')}/{path}"
    base = os.path.abspath(root.removeprefix("file://"))
    joined = os.path.abspath(os.path.join(base, path.removeprefix("file://")))
    if not _within(joined, base):
        raise Invalid(f"{_show(path)}: a path out of the source's folder; never opened")
    if not policy.follow_links and not _within(os.path.realpath(joined), os.path.realpath(base)):
        raise Invalid(f"{_show(path)}: {LINK_OUT}")
    return joined


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _show(value) -> str:
    """A value as the reason shows it: its repr, cut short (a hostile file's value may be huge)."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
