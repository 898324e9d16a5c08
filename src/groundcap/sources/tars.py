"""Plain tar shards (WebDataset, SA-1B), local paths or fsspec URLs, walked header by header.

A shard is opened as a seekable file and its headers are read in order; a member's bytes are read
only when ingest asks for them (one ranged read at its offset, capped by the byte limit), so a shard
is never unpacked or held in memory, and reads can happen in any order or at once. Compressed tars
cannot be read at an offset: they are refused with a message saying so. Every read goes through the
source policy's :meth:`~groundcap.sources.policy.SourcePolicy.open` (its per-request timeouts).
"""

from __future__ import annotations

import posixpath
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from braceexpand import braceexpand

from groundcap.errors import SourceError
from groundcap.sources.entry import Local, Reader, SourceFile
from groundcap.sources.policy import LOCAL, SourcePolicy, describe, protocol_of


def expand(source: str, pattern: str) -> list[str]:
    """Shard URLs of a brace pattern (``train-{00000..00099}.tar``), in its order; :class:`SourceError` when two
    share a file name, as their members' names (``<shard file name>/<member>``) would then collide."""
    shards = list(braceexpand(pattern))
    names = Counter(posixpath.basename(shard) for shard in shards)
    if twice := sorted(name for name, count in names.items() if count > 1):
        raise SourceError(f"source {source!r}: shard file name {twice[0]!r} given more than once; member names "
                          "would be ambiguous")
    return shards


@dataclass(frozen=True)
class Member:
    """One regular file inside a shard: where its bytes start and how many there are."""

    shard: str
    path: str  # inside the shard, without a leading "./"
    offset: int
    size: int
    refused: str | None = None  # why it is never read (a link, a device, a second member of the same name)

    @property
    def name(self) -> str:
        """What reports and provenance show: ``<shard file name>/<member path>``."""
        return f"{posixpath.basename(self.shard)}/{self.path}"

    @property
    def local(self) -> Local | None:
        """Where its bytes lie when the shard is a local file; None for a remote one."""
        if protocol_of(self.shard) != LOCAL:
            return None
        return Local(self.shard.removeprefix("file://"), self.offset)

    def reader(self, policy: SourcePolicy) -> Reader:
        def read(limit: int) -> bytes:
            with policy.open(self.shard) as fh:
                fh.seek(self.offset)
                return fh.read(min(limit, self.size))

        return read


def failed(name: str, message: str) -> SourceFile:
    """An item whose read fails with ``message``: ingest records it as a rejection, like any bad file."""

    def read(limit: int) -> bytes:
        raise OSError(message)

    return SourceFile(name, read)


def members(shard: str, policy: SourcePolicy) -> Iterator[Member | SourceFile]:
    """The members of ``shard`` but its folders, in tar order: a link, a device or a second member of a path
    already seen comes with ``refused``, so the kind can record it; a shard that cannot be opened or read to
    its end yields a failed item naming the shard and why (the members before the fault still count)."""
    seen: set[str] = set()  # this shard's member paths: a few thousand, gone with the shard
    try:
        with policy.open(shard) as fh:
            try:
                tar = tarfile.open(fileobj=fh, mode="r:")
            except tarfile.ReadError as exc:
                yield failed(shard, f"not a plain (uncompressed) tar: {exc}; decompress compressed shards first")
                return
            while (info := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header it read; memory stays flat without them
                if info.isdir():
                    continue
                path = info.name.removeprefix("./")
                refused = None if info.isreg() else _not_regular(info)
                if path in seen:
                    refused = "a second member of this path in the tar; only the first is read"
                seen.add(path)
                yield Member(shard, path, info.offset_data, info.size, refused)
    except (OSError, tarfile.TarError) as exc:
        yield failed(shard, describe(exc))


def _not_regular(info: tarfile.TarInfo) -> str:
    if info.issym() or info.islnk():
        return f"a link member (to {info.linkname!r}), not a file; never followed"
    return "a device, FIFO or other special member, not a file; never read"
