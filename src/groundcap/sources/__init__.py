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
from groundcap.sources.policy import SourcePolicy, describe, fetch
from groundcap.sources.sa1b import iter_sa1b
from groundcap.sources.webdataset import iter_webdataset

__all__ = ["KINDS", "Reader", "Refused", "SourceError", "SourceFile", "SourcePolicy", "describe", "fetch",
           "iter_source"]

# prefix -> (source, what follows "prefix:", policy) -> its files; each checks its targets against the policy
# before it returns, so a target the policy refuses stops the run before anything is read
KINDS: dict[str, Callable[[str, str, SourcePolicy], Iterator[SourceFile]]] = {
    "wds": iter_webdataset,  # wds:shards/train-{00000..00099}.tar (local or fsspec URL)
    "hf": iter_hf_dataset,  # hf://datasets/ORG/NAME?config=..&split=..&image=..  or  hf:<local folder>
    "sa1b": iter_sa1b,  # sa1b:<folder>  or  sa1b:sa_{000000..000999}.tar
    "coco": iter_coco,  # coco:instances.json?images=<folder>
}


def iter_source(source: str, policy: SourcePolicy | None = None) -> Iterator[SourceFile]:
    """Files of ``source`` in a deterministic order, listed and read under ``policy`` (the defaults when None);
    :class:`SourceError` at once for a ``kind:`` target the policy refuses."""
    policy = policy or SourcePolicy()
    kind, sep, target = source.partition(":")
    if sep and kind in KINDS:
        return KINDS[kind](source, target, policy)
    return iter_files(source, policy)
