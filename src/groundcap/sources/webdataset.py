"""WebDataset shards: ``wds:<tar or brace pattern>``, each member with an image extension is one image.

The source path of an image is ``<shard file name>/<member path>``, the member path being the
sample's key plus the field's extension (``train-00000.tar/000017.jpg``). Other members (captions,
class ids, JSON) are not images and are passed over; an image member that is a link, or a second member
of one path, is a rejection.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from groundcap.errors import SourceError
from groundcap.sources.entry import SourceFile
from groundcap.sources.policy import SourcePolicy
from groundcap.sources.tars import expand, members

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pnm"})


def is_image(path: str) -> bool:
    return posixpath.splitext(path)[1].lstrip(".").lower() in IMAGE_EXTENSIONS


def iter_webdataset(source: str, target: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """The images of the shards; a shard whose protocol the policy refuses refuses the source, before any read."""
    if not target:
        raise SourceError(f"source {source!r} names no shard: wds:shards/train-{{00000..00009}}.tar")
    shards = expand(source, target)
    policy.require(source, shards)
    return _images(shards, policy)


def _images(shards: list[str], policy: SourcePolicy) -> Iterator[SourceFile]:
    for shard in shards:
        for item in members(shard, policy):
            if isinstance(item, SourceFile):
                yield item
            elif is_image(item.path):
                yield SourceFile(item.name, item.reader(policy), refused=item.refused, local=item.local)
