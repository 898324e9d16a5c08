"""Where images come from. ``source:`` in params names one; :func:`iter_source` yields its files.

Each source kind lives in its own module and yields :class:`SourceFile` items in a stable order; what
an untrusted source may make ingest do is :class:`SourcePolicy` (``policy.py``), and every kind's reads
go through :func:`fetch`.
"""

from __future__ import annotations

from collections.abc import Iterator

from groundcap.errors import SourceError
from groundcap.sources.entry import Reader, Refused, SourceFile
from groundcap.sources.files import iter_files
from groundcap.sources.policy import SourcePolicy, fetch

__all__ = ["Reader", "Refused", "SourceError", "SourceFile", "SourcePolicy", "fetch", "iter_source"]


def iter_source(source: str, policy: SourcePolicy | None = None) -> Iterator[SourceFile]:
    """Files of ``source`` in a deterministic order, listed under ``policy`` (the defaults when None)."""
    yield from iter_files(source, policy or SourcePolicy())
