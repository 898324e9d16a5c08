"""What changed between two releases: images added, removed, changed, and moved between splits.

A release is read through its own ``data/`` Parquet shards, metadata columns only and one record
batch at a time, so any release folder or fsspec URL (a folder target's ``v1.0.0``,
``hf://datasets/org/name@v1.0.0``) can be compared, and the split stage can pin the previous
release's splits. An image is identified by its content id; it *changed* when its annotations
(regions, scene caption, QA score) differ, and *moved* when its split did (which groundcap never
does to a published image; ``diff`` shows it if someone else did).

A release that cannot be read (a Hub repo or revision that does not exist, a server error, an
endpoint out of reach, a missing filesystem package) is a :class:`ReleaseError` of one redacted
line, whatever the filesystem raised: the Hub's errors echo request headers and span lines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from groundcap.credentials import failure, url_secrets
from groundcap.errors import ReleaseError
from groundcap.splits import ALL_SPLITS

_SHARD = re.compile(r"^(?P<split>[^/]+)-\d{5}-of-\d{5}\.parquet$")
_ANNOTATIONS = ["regions", "scene_caption", "qa_score"]
_SHOWN = 5  # ids listed per change kind in the text report


class Entry(NamedTuple):
    split: str
    fingerprint: bytes  # of the image's annotations


def index(release: str) -> dict[str, Entry]:
    """``image_id -> Entry`` of every image a release holds."""
    try:
        return _index(str(release))
    except ReleaseError:
        raise
    except Exception as exc:  # noqa: BLE001 - each filesystem raises its own types; their text may hold a token
        message = failure(f"reading {release}", exc, *url_secrets(str(release)))
    # raised outside the except block: no __context__ holding the original exception
    raise ReleaseError(message) from None


def _index(release: str) -> dict[str, Entry]:
    fs, root = url_to_fs(release)
    shards = sorted(fs.glob(f"{root.rstrip('/')}/data/*.parquet"))
    if not shards:
        raise ReleaseError(f"{release} holds no data/*.parquet: not a groundcap release folder")
    out: dict[str, Entry] = {}
    for path in shards:
        match = _SHARD.match(path.rsplit("/", 1)[-1])
        if not match:
            continue
        with fs.open(path, "rb") as fh:
            for batch in pq.ParquetFile(fh).iter_batches(columns=["image_id", *_ANNOTATIONS], batch_size=1024):
                for row in batch.to_pylist():
                    out[row.pop("image_id")] = Entry(match["split"], _fingerprint(row))
    return out


def _fingerprint(annotations: dict) -> bytes:
    text = json.dumps(annotations, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()[:16]


@dataclass
class Diff:
    added: dict[str, list[str]] = field(default_factory=dict)  # split -> image ids
    removed: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    moved: dict[str, list[str]] = field(default_factory=dict)  # "old -> new" -> image ids
    unchanged: int = 0

    def counts(self) -> dict[str, int]:
        return {kind: sum(len(v) for v in getattr(self, kind).values()) for kind in ("added", "removed", "changed",
                                                                                       "moved")}

    def to_dict(self) -> dict:
        return {"added": self.added, "removed": self.removed, "changed": self.changed, "moved": self.moved,
                "unchanged": self.unchanged, "counts": self.counts()}

    def lines(self) -> list[str]:
        """A short text report: counts per split, the first few ids of each kind."""
        counts = self.counts()
        out = [", ".join(f"{n} {kind}" for kind, n in counts.items()) + f", {self.unchanged} unchanged"]
        for kind in counts:
            for split, ids in getattr(self, kind).items():
                more = f" (+{len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else ""
                out.append(f"  {kind:<8} {split:<22} {len(ids):>7}: {' '.join(ids[:_SHOWN])}{more}")
        return out


def compare(old: dict[str, Entry], new: dict[str, Entry]) -> Diff:
    """The changes from ``old`` to ``new`` (two ``index`` results); every id list sorted."""
    diff = Diff()

    def note(kind: str, where: str, image: str) -> None:
        getattr(diff, kind).setdefault(where, []).append(image)

    for image in sorted(old.keys() | new.keys()):
        before, after = old.get(image), new.get(image)
        if before is None:
            note("added", after.split, image)
        elif after is None:
            note("removed", before.split, image)
        elif before.split != after.split:
            note("moved", f"{before.split} -> {after.split}", image)
        elif before.fingerprint != after.fingerprint:
            note("changed", after.split, image)
        else:
            diff.unchanged += 1
    for kind in ("added", "removed", "changed", "moved"):
        setattr(diff, kind, dict(sorted(getattr(diff, kind).items())))
    return diff


def split_counts(entries: dict[str, Entry]) -> dict[str, int]:
    """Images per split, in the usual split order (train, validation, test, human_test), then any other."""
    counts = Counter(e.split for e in entries.values())
    order = {split: i for i, split in enumerate(ALL_SPLITS)}
    return {split: counts[split] for split in sorted(counts, key=lambda s: (order.get(s, len(order)), s))}
