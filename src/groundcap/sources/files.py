"""File sources: a folder (recursive), a text file of paths/URLs, or the bundled sample."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec

from groundcap import sample
from groundcap.errors import SourceError
from groundcap.sources.entry import Reader, SourceFile


def _reader(url: str) -> Reader:
    def read(limit: int) -> bytes:
        with fsspec.open(url, "rb") as fh:
            return fh.read(limit)

    return read


def iter_files(source: str) -> Iterator[SourceFile]:
    """Files of ``source`` in a deterministic order."""
    if source == sample.PREFIX:
        for path in sample.paths():
            yield SourceFile(f"{sample.PREFIX}{path.name}", _reader(str(path)))
        return
    if "://" in source and not source.startswith("file://"):
        raise SourceError(f"{source!r}: a remote source must be a text file listing image URLs, one per line")
    path = Path(source.removeprefix("file://"))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
        for p in files:
            yield SourceFile(p.relative_to(path).as_posix(), _reader(str(p)))
    elif path.is_file():
        yield from _iter_list(path)
    else:
        raise SourceError(f"source {source!r} is neither a folder, a list file, nor '{sample.PREFIX}'")


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _iter_list(path: Path) -> Iterator[SourceFile]:
    """A text file with one path or URL per line; blank lines and '#' comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path} is not a UTF-8 text list of image paths/URLs (pass a folder for images)") from exc
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        url = entry if "://" in entry else str((path.parent / entry) if not Path(entry).is_absolute() else entry)
        yield SourceFile(entry, _reader(url))
