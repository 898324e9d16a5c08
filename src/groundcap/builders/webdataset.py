"""WebDataset tars beside the Parquet configs, for streaming trainers.

One sample per image: ``{key}.jpg|png`` (the encoded bytes: ingest's, or the privacy pass's blurred PNG) and
``{key}.json`` (image_id, size, regions, scene caption, QA score, what was blurred; boxes and scores as the
Parquet configs store them, float32), key = image_id. Members are written the way
``webdataset.TarWriter(encoder=False)`` writes them (a ``tarfile`` stream, members in sorted extension
order, one ``TarInfo`` each), with ``tarfile`` itself: importing webdataset imports torch (1.3 s), which a
build worker does not need. ``ShardWriter`` is not used: it opens its first tar before any sample arrives
(an empty split would get an empty tar) and stamps ``time.time()`` as mtime unless told otherwise. Here
mtime, owner and mode are fixed, so the same records give byte-identical tars. A split with no images gets
no tar; shards roll past ``shard_bytes`` and are renamed to ``wds/{split}-{i:05d}.tar`` at close.

Each split with tars also gets ``wds/{split}.index.json``, the shard index that ``wids.ShardListDataset``
(webdataset's random-access reader) takes: ``wids-shard-index-v1`` with each tar's URL relative to the
index, its sample count and size, as ``widsindex create`` writes it (less the MD5, which
``checksums.json`` supersedes).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from groundcap.builders.columns import from_records
from groundcap.builders.files import SplitFiles
from groundcap.builders.parquet import region_fields
from groundcap.storage import atomic
from groundcap.storage.parts import reset_dir

MTIME = 0  # fixed member mtime (1970-01-01): tars must not depend on when they were built
OWNER = "groundcap"
EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # webdataset splits a member name at its first dot


def sample(record: dict) -> dict:
    """The webdataset sample of an image record (bytes only, ready for ``TarWriter(encoder=False)``)."""
    return _sample(record["image_id"], record["format"], record["image"]["bytes"], {
        "width": record["width"],
        "height": record["height"],
        "regions": [region_fields(r) for r in record["regions"]],
        "scene_caption": record["scene_caption"],
        "qa_score": record["qa_score"],
        "redactions": record["redactions"],
    })


def _f32(value: float | None) -> float | None:
    """``value`` as the Parquet configs store it (float32), written the shortest way that reads back as it."""
    return None if value is None else float(str(np.float32(value)))


def _as_released(meta: dict) -> dict:
    """The sample's numbers as data/ holds them (float32 boxes and scores), so the JSON agrees with the
    Parquet rows and ``groundcap hydrate``, which has only those, writes the same bytes."""
    return {**meta, "qa_score": _f32(meta["qa_score"]),
            "regions": [{**r, "bbox": [_f32(v) for v in r["bbox"]]} for r in meta["regions"]],
            "redactions": [{**r, "score": _f32(r["score"]), "bbox": [_f32(v) for v in r["bbox"]]}
                           for r in meta["redactions"]]}


def _sample(key: str, fmt: str, data: bytes, meta: dict) -> dict:
    if not _KEY.match(key):
        raise ValueError(f"image_id {key!r} is not a valid webdataset key (letters, digits, '_' and '-' only)")
    text = json.dumps({"image_id": key, **_as_released(meta)}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return {"__key__": key, EXTENSIONS[fmt]: data, "json": text.encode("utf-8")}


_META = ("width", "height", "regions", "scene_caption", "qa_score", "redactions")


def samples(batch: pa.Table):
    """The webdataset samples of a batch, in order (the metadata through Python: it becomes JSON)."""
    meta = batch.select(list(_META)).to_pylist()
    for key, fmt, data, m in zip(batch["image_id"].to_pylist(), batch["format"].to_pylist(),
                                 batch["image"].combine_chunks().field("bytes").to_pylist(), meta, strict=True):
        yield _sample(key, fmt, data, m)


class _TarStream:
    """What ``webdataset.TarWriter(fh, user=OWNER, group=OWNER, mode=0o444, encoder=False,
    mtime=MTIME)`` writes, byte for byte."""

    def __init__(self, fh):
        self.tar = tarfile.open(fileobj=fh, mode="w|")

    def write(self, obj: dict) -> int:
        total = 0
        key = obj["__key__"]
        for k in sorted(obj):
            if k[0] == "_":
                continue
            value = obj[k]
            info = tarfile.TarInfo(key + "." + k)
            info.size = len(value)
            info.mtime, info.mode, info.uname, info.gname = MTIME, 0o444, OWNER, OWNER
            self.tar.addfile(info, io.BytesIO(value))
            total += info.size
        return total

    def close(self) -> None:
        self.tar.close()


class _Tars:
    """The tars of one split."""

    def __init__(self, directory: Path, split: str, shard_bytes: int):
        self.files = SplitFiles(directory, split, ".tar")
        self.shard_bytes = shard_bytes
        self._tar: _TarStream | None = None
        self._size = 0
        self.samples: list[int] = []  # per tar
        self._index: Path | None = None

    def add(self, obj: dict) -> None:
        if self._tar is None:
            self._tar = _TarStream(self.files.open_next())
            self._size = 0
            self.samples.append(0)
        self._size += self._tar.write(obj)
        self.samples[-1] += 1
        if self._size >= self.shard_bytes:
            self._close_file()

    def _close_file(self) -> None:
        self._tar.close()
        self._tar = None
        self.files.close_current()

    def finish(self) -> list[tuple[Path, Path]]:
        if self._tar is not None:
            self._close_file()
        split = self.files.split
        pairs = self.files.finals(lambda i, n: f"{split}-{i:05d}.tar")
        if pairs:
            pairs.append((self._write_index(pairs), self.files.directory / index_name(split)))
        return pairs

    def _write_index(self, pairs: list[tuple[Path, Path]]) -> Path:
        shards = [{"url": final.name, "nsamples": n, "filesize": tmp.stat().st_size}
                  for (tmp, final), n in zip(pairs, self.samples, strict=True)]
        index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": self.files.split, "shardlist": shards}
        self._index = atomic.temporary(self.files.directory / index_name(self.files.split))
        with open(self._index, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(index, indent=1) + "\n")  # fsynced when published (SplitFiles.publish)
        return self._index

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
        self.files.discard()
        if self._index is not None:
            self._index.unlink(missing_ok=True)


def index_name(split: str) -> str:
    """The file name of a split's wids shard index, beside its tars."""
    return f"{split}.index.json"


class WebDatasetShards:
    """Streams image records into ``wds/{split}-{i:05d}.tar``."""

    def __init__(self, release_dir: Path, splits: list[str], *, shard_bytes: int):
        directory = reset_dir(Path(release_dir) / "wds")
        self._tars = {split: _Tars(directory, split, shard_bytes) for split in splits}

    def add(self, split: str, record: dict) -> None:
        self.add_table(split, from_records(split, [record]))

    def add_table(self, split: str, batch: pa.Table) -> None:
        for obj in samples(batch):
            self._tars[split].add(obj)

    def finish(self) -> list[tuple[Path, Path]]:
        return [pair for tars in self._tars.values() for pair in tars.finish()]

    def close(self) -> list[Path]:
        return SplitFiles.publish(self.finish())

    def abort(self) -> None:
        for tars in self._tars.values():
            tars.abort()
