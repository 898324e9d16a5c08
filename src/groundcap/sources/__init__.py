"""Where images come from. ``source:`` in params names one; :func:`iter_source` yields its files.

A folder, a list file of paths/URLs, or ``sample:`` (``sources.files``); or a packed or annotated
dataset named by its prefix (``kind:target``, see ``KINDS``). Each kind lives in its own module and
yields :class:`SourceFile` items in a stable order, streaming: memory does not grow with the images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from groundcap.errors import SourceError
from groundcap.sources.coco import iter_coco
from groundcap.sources.entry import Reader, SourceFile
from groundcap.sources.files import iter_files
from groundcap.sources.hf_dataset import iter_hf_dataset
from groundcap.sources.sa1b import iter_sa1b
from groundcap.sources.webdataset import iter_webdataset

__all__ = ["KINDS", "Reader", "SourceError", "SourceFile", "iter_source"]

# prefix -> iterator over (source, what follows "prefix:")
KINDS: dict[str, Callable[[str, str], Iterator[SourceFile]]] = {
    "wds": iter_webdataset,  # wds:shards/train-{00000..00099}.tar (local or fsspec URL)
    "hf": iter_hf_dataset,  # hf://datasets/ORG/NAME?config=..&split=..&image=..  or  hf:<local folder>
    "sa1b": iter_sa1b,  # sa1b:<folder>  or  sa1b:sa_{000000..000999}.tar
    "coco": iter_coco,  # coco:instances.json?images=<folder>
}


def iter_source(source: str) -> Iterator[SourceFile]:
    """Files of ``source`` in a deterministic order."""
    kind, sep, target = source.partition(":")
    if sep and kind in KINDS:
        yield from KINDS[kind](source, target)
    else:
        yield from iter_files(source)
