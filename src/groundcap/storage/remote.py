"""A file or folder on an fsspec filesystem (``s3://bucket/x``), with the few ``pathlib`` methods that the
part folders (``parts``), resume and the work-folder lock use, so the same code runs on a local folder
and on a shared store that map-stage workers on several nodes reach.

An object store has no rename: a file is written with one PUT (``write_bytes``), which S3 makes whole or
absent (a killed upload leaves no object), and exclusive creation is a conditional PUT (``create``:
``If-None-Match: *``). Listings are never cached: other nodes write the same folder.

Credentials never appear here: the filesystem reads them from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``) or its own config files, never from params or the URL.
"""

from __future__ import annotations

import posixpath
from typing import IO, Any

from groundcap.credentials import failure
from groundcap.errors import StorageError

# filesystems whose folders are key prefixes, which need no creating (and s3fs's makedirs would create a bucket)
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss", "memory"})


def is_url(location: str) -> bool:
    """Whether ``location`` names a store through fsspec (``s3://...``) rather than a local folder."""
    return "://" in str(location)


class RemotePath:
    """``path`` on the fsspec filesystem ``fs``; ``RemotePath.at(url)`` makes one from a URL."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path.rstrip("/")

    @classmethod
    def at(cls, url: str) -> RemotePath:
        from fsspec.core import url_to_fs

        try:
            fs, path = url_to_fs(url, use_listings_cache=False)
        except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs (`pip install groundcap[s3]`)
            raise StorageError(failure(f"opening {url}", exc) + " (s3:// needs `pip install groundcap[s3]`)") \
                from None
        return cls(fs, path)

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.fs, posixpath.join(self.path, name))

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.fs, posixpath.dirname(self.path))

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """A folder on a local or POSIX fsspec filesystem; nothing on an object store (prefixes need none)."""
        protocols = {self.fs.protocol} if isinstance(self.fs.protocol, str) else set(self.fs.protocol)
        if not protocols & OBJECT_STORES:
            self.fs.makedirs(self.path, exist_ok=True)

    def iterdir(self) -> list[RemotePath]:
        try:
            listing = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:  # a prefix no object is under yet
            return []
        return [RemotePath(self.fs, p) for p in listing if p.rstrip("/") != self.path]

    def open(self, mode: str = "rb") -> IO:
        return self.fs.open(self.path, mode)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file in one request: a reader sees the old file or the new one, never a part."""
        self.fs.pipe_file(self.path, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def create(self, data: bytes) -> bool:
        """Write the file only if it does not exist (S3: a conditional PUT); whether this call created it."""
        try:
            self.fs.pipe_file(self.path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise
