"""What a source nobody vetted may make ingest do (``ingest.source_policy``; README, "Source policy").

Which protocols may be read (cloud and Hub protocols fetch with this machine's credentials, so they are
refused unless named): a list's entries, the images a dataset points at, and the targets of the
``kind:`` sources themselves (a ``wds:s3://...`` target is refused, before anything is read, like an
``s3://`` list entry). Whether a folder's links may lead out of it, how long one file, one request and
one image's decoding (``groundcap.ingest.Decoder``) may take, and how many files are read at once.

Every source kind reads through :func:`fetch`: at most ``workers`` reads run at a time, each on its own
daemon thread bounded by ``file_timeout_s`` (a read that hangs anyway is abandoned, never waited for),
and results come back in the order the source listed them, so ids, parts and rejects are those of a
sequential read. What a kind reads to list its files (tar headers, a COCO JSON) and every fsspec read
goes through :meth:`SourcePolicy.open`, which bounds each request where the filesystem takes timeouts.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import fsspec

from groundcap.errors import SourceError
from groundcap.sources import local
from groundcap.sources.entry import Refused, SourceFile

LOCAL = "file"
KEY = "ingest.source_policy"
LINK_OUT = f"a link out of the source folder; not followed ({KEY}.follow_links: false)"  # a reject reason
HTTP = ("http", "https")


@dataclass(frozen=True)
class SourcePolicy:
    protocols: tuple[str, ...] = (LOCAL, "http", "https")
    follow_links: bool = False
    file_timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    decode_timeout_s: float = 60.0
    workers: int = 8

    @classmethod
    def from_params(cls, ingest: dict) -> SourcePolicy:
        """From the ``ingest`` params section (its ``source_policy`` subsection)."""
        p = ingest["source_policy"]
        return cls(tuple(p["protocols"]), bool(p["follow_links"]), float(p["file_timeout_s"]),
                   float(p["connect_timeout_s"]), float(p["read_timeout_s"]), float(p["decode_timeout_s"]),
                   int(p["workers"]))

    def refusal(self, entry: str) -> str | None:
        """Why a list entry's protocol is refused, or None when the policy allows it."""
        protocol = protocol_of(entry)
        if protocol in self.protocols:
            return None
        return (f"protocol {protocol!r} is not allowed ({KEY}.protocols: {', '.join(self.protocols)}); "
                f"name it there to fetch such entries with this machine's credentials")

    def require(self, source: str, targets: Iterable[str]) -> None:
        """Refuse ``source`` (:class:`SourceError`) when one of the paths or URLs it names is refused."""
        for target in targets:
            if why := self.refusal(target):
                raise SourceError(f"source {source!r}: {target}: {why}")

    def open(self, url: str):
        """A local path opened only if it is a regular file (a FIFO named as a shard or an annotation file would
        block for ever: :class:`~groundcap.sources.local.NotRegular`), anything else ``fsspec.open(url, "rb")``
        with :meth:`storage_options`."""
        if protocol_of(url) == LOCAL:
            return local.open_regular(url.removeprefix("file://"))
        return fsspec.open(url, "rb", **self.storage_options(url))

    def storage_options(self, url: str) -> dict:
        """fsspec options bounding each request of ``url`` by ``connect_timeout_s`` and ``read_timeout_s``, per
        protocol of its chain, where the installed filesystem takes them: fsspec's http(s) passes ``timeout``
        to every aiohttp request (a ``ClientTimeout``: the connection, then each wait for bytes; no total, a
        large file may take long), leaving any ``client_kwargs`` from fsspec's configuration as they are.
        The Hub's ``hf://`` has its own (``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT``); s3fs and gcsfs
        take theirs from fsspec's configuration (docs/sources.md, "Source policy")."""
        chain = {part.split("://", 1)[0].lower() for part in url.split("::") if "://" in part}
        if not chain & set(HTTP):
            return {}
        from aiohttp import ClientTimeout  # fsspec's http needs it: present wherever such a URL can be read

        timeout = ClientTimeout(sock_connect=self.connect_timeout_s, sock_read=self.read_timeout_s)
        return {protocol: {"timeout": timeout} for protocol in sorted(chain & set(HTTP))}


def describe(exc: BaseException) -> str:
    """A refusal's reason as it is, else ``Type: message`` of a failed read, and its cause when it has one:
    fsspec's http reports a timeout or a refused connection as ``FileNotFoundError`` of the URL, and only the
    cause says which."""
    if isinstance(exc, Refused):
        return str(exc)
    cause = exc.__cause__
    return f"{type(exc).__name__}: {exc}" + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")


def protocol_of(entry: str) -> str:
    """``file`` for a local path, else the outermost fsspec protocol (``simplecache::s3://..`` is ``simplecache``)."""
    head = entry.split("::", 1)[0]
    if "://" in head:
        return head.split("://", 1)[0].lower()
    return head.lower() if "::" in entry else LOCAL


class _Read:
    """One file's read, started at once on a daemon thread (a hung one never blocks the interpreter's exit)."""

    def __init__(self, item: SourceFile, limit: int, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.done = threading.Event()
        self.value: bytes | Exception = b""  # set by the thread before ``done``
        threading.Thread(target=self._run, args=(item, limit), name="groundcap-fetch", daemon=True).start()

    def _run(self, item: SourceFile, limit: int) -> None:
        try:
            self.value = item.read(limit)
        except Exception as exc:  # every failure is this file's rejection, recorded with its reason
            self.value = exc
        finally:
            self.done.set()

    def result(self) -> bytes | Exception:
        if self.done.wait(max(0.0, self.deadline - time.monotonic())):
            return self.value
        return Refused(f"no complete read within {KEY}.file_timeout_s={self.timeout_s:g} s; abandoned")


Fetched = tuple[SourceFile, bytes | Exception]


def fetch(items: Iterable[SourceFile], policy: SourcePolicy, limit: int) -> Iterator[Fetched]:
    """``(item, bytes or the exception that refused it)`` for each item, in the items' order; at most
    ``policy.workers`` reads in flight, each returning at most ``limit`` bytes."""
    window: deque[tuple[SourceFile, _Read | None]] = deque()
    for item in items:
        window.append((item, None if item.refused else _Read(item, limit, policy.file_timeout_s)))
        if len(window) >= policy.workers:
            yield _result(*window.popleft())
    while window:
        yield _result(*window.popleft())


def _result(item: SourceFile, read: _Read | None) -> Fetched:
    return item, (read.result() if read else Refused(item.refused))
