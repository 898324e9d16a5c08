"""Publishing to a folder or any fsspec URL (``/data/releases/x``, ``file://``, ``s3://``, ``memory://``).

A release lands in ``URL/v{version}/``, holding the same files as the Hub repo would. The manifest is
written last: a version folder with a manifest is a finished publish and is never written again; one
without is an interrupted publish, cleared and written anew. Every file is read back (size and sha256)
before the next is written, so the manifest only appears once everything before it is known good.

Any failure of the filesystem (``hf://`` raises the Hub's HTTP errors, which echo request headers;
``s3://`` signed URLs) becomes a :class:`PublishError` whose message is redacted and which chains
nothing, as the Hub target's calls do.
"""

from __future__ import annotations

import posixpath

from groundcap.builders.checksums import MANIFEST
from groundcap.credentials import failure, url_secrets
from groundcap.publish.plan import Entry, Plan, PublishError, sha256_stream


def location(url: str, tag: str) -> str:
    """Where ``URL/{tag}`` is, as ``load_dataset`` takes it: a local path, or a URL."""
    fs, root = _filesystem(url)
    return _shown(fs, posixpath.join(root, tag))


def publish_folder(plan: Plan, url: str) -> str:
    """Write the release to ``URL/v{version}/`` and read it back; where it is (see :func:`location`)."""
    try:
        return _publish(plan, url)
    except PublishError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, its text may hold a token or a signed URL
        message = failure(f"publishing to {url}", exc, *url_secrets(url))
    # raised outside the except block: no __context__ holding the original exception
    raise PublishError(message) from None


def _publish(plan: Plan, url: str) -> str:
    fs, root = _filesystem(url)
    target = posixpath.join(root, plan.tag)
    if fs.exists(posixpath.join(target, MANIFEST)):
        raise PublishError(f"{_shown(fs, target)} already holds a published release; "
                           "published releases are immutable: bump release.version and rebuild")
    if fs.exists(target):  # an interrupted publish
        fs.rm(target, recursive=True)
    for entry in plan.files:  # the manifest last
        _copy(fs, plan, entry, posixpath.join(target, entry.path))
    return _shown(fs, target)


def _filesystem(url: str):
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url)
    except ImportError as exc:  # e.g. s3:// without s3fs
        raise PublishError(f"cannot write to {url}: {exc}") from None


def _shown(fs, path: str) -> str:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return path if "file" in protocols else fs.unstrip_protocol(path)


def _copy(fs, plan: Plan, entry: Entry, remote: str) -> None:
    """Write one file and read it back; a file that reads back wrong is removed, and the publish stops."""
    fs.makedirs(posixpath.dirname(remote), exist_ok=True)
    fs.put_file(str(plan.release / entry.path), remote)
    size = fs.size(remote)
    with fs.open(remote, "rb") as fh:
        sha256 = sha256_stream(fh)
    if (size, sha256) != (entry.size, entry.sha256):
        fs.rm(remote)
        raise PublishError(f"{remote} reads back as {size} bytes with sha256 {sha256[:12]}, not the {entry.size} "
                           f"bytes with sha256 {entry.sha256[:12]} written: the storage altered it; publish again")
