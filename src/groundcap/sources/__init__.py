"""Where images come from. ``source:`` in params names one; :func:`iter_source` yields its files.

Each source kind lives in its own module and yields :class:`SourceFile` items in a stable order.
"""

from __future__ import annotations

from collections.abc import Iterator

from groundcap.errors import SourceError
from groundcap.sources.entry import Reader, SourceFile
from groundcap.sources.files import iter_files

__all__ = ["Reader", "SourceError", "SourceFile", "iter_source"]


def iter_source(source: str) -> Iterator[SourceFile]:
    """Files of ``source`` in a deterministic order."""
    yield from iter_files(source)
