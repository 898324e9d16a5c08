"""Where images come from. ``source:`` in params names one; :func:`iter_source` yields its files.

A folder, a list file of paths/URLs, or ``sample:`` (``sources.files``); or a packed or annotated
dataset named by its prefix (``kind:target``, see ``KINDS``). Each kind lives in its own module and
yields :class:`SourceFile` items in a stable order, streaming: memory does not grow with the images.
What an untrusted source may make ingest do is :class:`SourcePolicy` (``policy.py``), and every
kind's reads go through :func:`fetch` (its per-file time bound and ordered, bounded concurrency).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from groundcap.errors import SourceError
from groundcap.sources.coco import iter_coco
from groundcap.sources.entry import Reader, Refused, SourceFile
from groundcap.sources.files import iter_files
from groundcap.sources.hf_dataset import iter_hf_dataset
from groundcap.sources.policy import SourcePolicy, fetch
from groundcap.sources.sa1b import iter_sa1b
from groundcap.sources.webdataset import iter_webdataset

__all__ = ["KINDS", "Reader", "Refused", "SourceError", "SourceFile", "SourcePolicy", "fetch", "iter_source"]

# prefix -> iterator over (source, what follows "prefix:"); the operator names these in params, so the
# list-entry protocol allow-list of the policy does not apply to them (their reads are still time-bound)
KINDS: dict[str, Callable[[str, str], Iterator[SourceFile]]] = {
    "wds": iter_webdataset,  # wds:shards/train-{00000..00099}.tar (local or fsspec URL)
    "hf": iter_hf_dataset,  # hf://datasets/ORG/NAME?config=..&split=..&image=..  or  hf:<local folder>
    "sa1b": iter_sa1b,  # sa1b:<folder>  or  sa1b:sa_{000000..000999}.tar
    "coco": iter_coco,  # coco:instances.json?images=<folder>
}


def iter_source(source: str, policy: SourcePolicy | None = None) -> Iterator[SourceFile]:
    """Files of ``source`` in a deterministic order; folders and lists are listed under ``policy`` (the
    defaults when None)."""
    kind, sep, target = source.partition(":")
    if sep and kind in KINDS:
        yield from KINDS[kind](source, target)
    else:
        yield from iter_files(source, policy or SourcePolicy())
