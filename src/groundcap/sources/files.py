"""File sources: a folder (recursive), a text file of paths/URLs, or the bundled sample.

Every entry found becomes a :class:`SourceFile`; what the source policy will not read (a FIFO, a device,
a dangling link, a link out of the folder, a refused protocol) is one too, with ``refused`` set, so it
gets its row in ``reports/rejects.parquet`` instead of being skipped or opened. A path or URL that a
dataset names (a COCO image, an image cell of a Hub dataset) is read as a list's line is
(:func:`entry_file`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from groundcap.credentials import redact
from groundcap.errors import SourceError
from groundcap.sources import http, local, sample
from groundcap.sources.entry import Local, Reader, SourceFile
from groundcap.sources.policy import HTTP, KEY, LINK_OUT, LOCAL, SourcePolicy, protocol_of


def iter_files(source: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """Files of ``source`` in a deterministic order."""
    if source == sample.PREFIX:
        for path in sample.paths():
            licence = sample.IMAGES[path.name][2]
            name = f"{sample.PREFIX}{path.name}"
            yield SourceFile(name, local.reader(str(path)), license=licence, local=Local(name))
        return
    if "://" in source and not source.startswith("file://"):
        raise SourceError(f"{source!r}: a remote source must be a text file listing image URLs, one per line")
    path = Path(source.removeprefix("file://"))
    if path.is_dir():
        yield from _iter_folder(path, policy)
    elif path.is_file():
        yield from _iter_list(path, policy)
    else:
        raise SourceError(f"source {source!r} is neither a folder, a list file, nor '{sample.PREFIX}'")


def _iter_folder(root: Path, policy: SourcePolicy) -> Iterator[SourceFile]:
    """Every non-hidden entry under ``root``, sorted by relative path; links are resolved once, here."""
    for rel, path, refused in listing(root, policy):
        if refused:
            yield SourceFile(rel.as_posix(), refused=refused)
        else:
            yield SourceFile(rel.as_posix(), local.reader(path, follow=False), local=Local(path))


def listing(root: Path, policy: SourcePolicy) -> list[tuple[PurePosixPath, str, str | None]]:
    """``(relative path, real path to read, refusal)`` of every non-hidden file under ``root``, sorted by
    relative path: what the policy will not read (a FIFO, a link out of ``root``, ...) comes with its refusal."""
    return sorted(_walk(root, policy.follow_links), key=lambda entry: entry[0].parts)


def _walk(root: Path, follow_links: bool) -> Iterator[tuple[PurePosixPath, str, str | None]]:
    """``(relative path, real path to read, refusal)`` for each entry; folders linked to are entered only
    when ``follow_links`` (once each, so a link loop ends)."""
    root_real = os.path.realpath(root)
    entered = {root_real}
    stack: list[tuple[str, PurePosixPath]] = [(str(root), PurePosixPath())]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            yield rel, folder, f"cannot list this folder: {exc.strerror or type(exc).__name__}"
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = rel / entry.name
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, name))
            elif not entry.is_symlink():
                yield name, entry.path, local.not_regular(entry.stat(follow_symlinks=False).st_mode)
            else:
                target = os.path.realpath(entry.path)
                try:
                    mode = os.stat(target).st_mode
                except OSError:
                    yield name, target, "a dangling link: its target does not exist"
                    continue
                if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
                    yield name, target, local.not_regular(mode, link=True)
                elif not follow_links and os.path.commonpath([root_real, target]) != root_real:
                    yield name, target, LINK_OUT
                elif stat.S_ISDIR(mode):
                    if not follow_links:
                        yield name, target, f"a link to a folder; not followed ({KEY}.follow_links: false)"
                    elif target in entered:
                        yield name, target, "a link to a folder already listed (a loop); not followed"
                    else:
                        entered.add(target)
                        stack.append((target, name))
                else:
                    yield name, target, None


def _iter_list(path: Path, policy: SourcePolicy) -> Iterator[SourceFile]:
    """A text file with one path or URL per line; blank lines and '#' comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path} is not a UTF-8 text list of image paths/URLs (pass a folder for images)") from exc
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        # a signed URL or user:password@ must not reach the tables or the release
        yield entry_file(redact(entry), entry, policy, path.parent)


def entry_file(name: str, entry: str, policy: SourcePolicy, base: Path | None = None, **extra) -> SourceFile:
    """The file at one path or URL a source names, shown as ``name``: refused when the policy does not allow
    its protocol or it is no regular local file; a local path (relative to ``base``) is read without
    blocking, http(s) by one timed GET (``http``), any other protocol through fsspec (:meth:`SourcePolicy.open`).
    ``extra``: the :class:`SourceFile`'s other fields (licence, given masks)."""
    if refused := policy.refusal(entry):
        return SourceFile(name, refused=refused, **extra)
    protocol = protocol_of(entry)
    if protocol == LOCAL:
        local_path = entry.removeprefix("file://")
        local_path = str(base / local_path) if base is not None and not Path(local_path).is_absolute() else local_path
        refused = local.refusal(local_path)
        if refused:
            return SourceFile(name, refused=refused, **extra)
        return SourceFile(name, local.reader(local_path), local=Local(local_path), **extra)
    if protocol in HTTP:
        return SourceFile(name, http.reader(entry, policy), **extra)
    return SourceFile(name, _fsspec_reader(entry, policy), **extra)


def _fsspec_reader(url: str, policy: SourcePolicy) -> Reader:
    """A protocol the policy names (s3, gs, hf, ...): fsspec with its own credentials, bounded by
    ``file_timeout_s``."""

    def read(limit: int) -> bytes:
        with policy.open(url) as fh:
            return fh.read(limit)

    return read
