"""The driver's local mirror of a shared work folder (``--workdir s3://bucket/x``).

Map stages write their parts straight to the store, from whichever node runs them (``parts`` on a
``RemotePath``). The global stages (ingest, dedup, split, build, card) write with ordinary file APIs
(Parquet and tar writers, plots), so they run on the driver's local copy: :func:`pull` brings it up to the
store first, :func:`push` then sends what the stage declares it writes.

A store has no rename, so the order of requests keeps readers safe: ``push`` first deletes the seals under
the outputs it replaces (part markers ``*.done``, and the ``last`` names: the release's manifest), then
uploads the data files, each one PUT (whole or absent), then the markers, then ``last``. A reader that
trusts only sealed parts and a release with a manifest never sees a half-pushed output. Which version of
each file the mirror holds (its ETag, else size and mtime) is kept in ``ROOT/.groundcap-mirror.json``, so
``pull`` fetches only what changed.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from groundcap.storage import atomic
from groundcap.storage.remote import RemotePath
from groundcap.storage.writer_lock import LOCK

INDEX = ".groundcap-mirror.json"
SEAL = ".done"


def _skipped(name: str) -> bool:
    return name in (LOCK, INDEX) or atomic.is_temporary(Path(name))


def _version(info: dict) -> str:
    return str(info.get("ETag") or f"{info.get('size')}:{info.get('mtime') or info.get('LastModified')}")


def _listing(store: RemotePath, under: str = "") -> dict[str, dict]:
    """``relative path -> info`` of every file of the store (under ``under``)."""
    base = store / under if under else store
    try:
        found = store.fs.find(base.path, detail=True)
    except FileNotFoundError:
        return {}
    prefix = store.path + "/"
    return {p[len(prefix):]: info for p, info in found.items() if not _skipped(posixpath.basename(p))}


def _index(root: Path) -> dict[str, str]:
    try:
        return json.loads((root / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def pull(store: RemotePath, root: Path) -> int:
    """Make ``root`` hold what the store holds: fetch the files that changed there, remove those it no longer
    has; how many files were fetched."""
    remote, index, fetched = _listing(store), _index(root), 0
    for rel, info in sorted(remote.items()):
        target, version = root / rel, _version(info)
        if index.get(rel) != version or not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic.replacing(target) as tmp:
                store.fs.get_file((store / rel).path, str(tmp))
            index[rel], fetched = version, fetched + 1
    for rel in sorted(set(index) - set(remote)):
        (root / rel).unlink(missing_ok=True)
        del index[rel]
    root.mkdir(parents=True, exist_ok=True)
    atomic.write_text(root / INDEX, json.dumps(index, sort_keys=True))
    return fetched


def _local_files(root: Path, output: str) -> list[str]:
    path = root / output
    if path.is_file():
        return [output]
    return [p.relative_to(root).as_posix() for p in sorted(path.rglob("*")) if p.is_file() and not _skipped(p.name)]


def push(root: Path, store: RemotePath, outputs: list[str], last: tuple[str, ...] = ()) -> int:
    """Send the files under ``outputs`` (folders or files, relative to ``root``) to the store, seals last (see
    the module's docstring); delete what the store holds there that ``root`` does not; how many were sent."""
    def rank(rel: str) -> int:
        name = posixpath.basename(rel)
        return 2 if name in last else 1 if name.endswith(SEAL) else 0

    local = sorted((rel for output in outputs for rel in _local_files(root, output)), key=lambda r: (rank(r), r))
    remote = {rel for output in outputs for rel in _listing(store, output)}
    index = _index(root)
    for rel in sorted(remote, key=lambda r: (-rank(r), r)):  # seals first: nothing stays sealed while replaced
        if rank(rel) or rel not in local:
            (store / rel).unlink(missing_ok=True)
            index.pop(rel, None)
    for rel in local:
        target = store / rel
        store.fs.put_file(str(root / rel), target.path)
        index[rel] = _version(store.fs.info(target.path))
    atomic.write_text(root / INDEX, json.dumps(index, sort_keys=True))
    return len(local)
