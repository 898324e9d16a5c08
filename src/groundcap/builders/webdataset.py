"""WebDataset tars beside the Parquet configs, for streaming trainers.

One sample per image: ``{key}.jpg|png`` (the original encoded bytes) and ``{key}.json`` (image_id,
size, regions, scene caption, QA score), key = image_id. ``webdataset.TarWriter`` is used directly
rather than ``ShardWriter``: ShardWriter opens its first tar before any sample arrives (an empty
split would get an empty tar) and stamps ``time.time()`` as mtime unless told otherwise. Here mtime,
owner and mode are fixed, so the same records give byte-identical tars. A split with no images gets
no tar; shards roll past ``shard_bytes`` and are renamed to ``wds/{split}-{i:05d}.tar`` at close.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from webdataset import TarWriter

from groundcap.builders.parquet import region_fields
from groundcap.parts import reset_dir

MTIME = 0  # fixed member mtime (1970-01-01): tars must not depend on when they were built
OWNER = "groundcap"
EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")  # webdataset splits a member name at its first dot


def sample(record: dict) -> dict:
    """The webdataset sample of an image record (bytes only, ready for ``TarWriter(encoder=False)``)."""
    key = record["image_id"]
    if not _KEY.match(key):
        raise ValueError(f"image_id {key!r} is not a valid webdataset key (letters, digits, '_' and '-' only)")
    meta = {
        "image_id": key,
        "width": record["width"],
        "height": record["height"],
        "regions": [region_fields(r) for r in record["regions"]],
        "scene_caption": record["scene_caption"],
        "qa_score": record["qa_score"],
    }
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"__key__": key, EXTENSIONS[record["format"]]: record["image"]["bytes"], "json": text.encode("utf-8")}


class _Tars:
    """The tars of one split."""

    def __init__(self, directory: Path, split: str, shard_bytes: int):
        self.directory, self.split, self.shard_bytes = directory, split, shard_bytes
        self.tmp_paths: list[Path] = []
        self._fh = self._tar = None
        self._size = 0

    def add(self, record: dict) -> None:
        if self._tar is None:
            self.tmp_paths.append(self.directory / f".{self.split}-{len(self.tmp_paths):05d}.tar.tmp")
            self._fh = open(self.tmp_paths[-1], "wb")
            self._tar = TarWriter(self._fh, user=OWNER, group=OWNER, mode=0o444, encoder=False, mtime=MTIME)
            self._size = 0
        self._size += self._tar.write(sample(record))
        if self._size >= self.shard_bytes:
            self._close_file()

    def _close_file(self) -> None:
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = self._tar = None

    def close(self) -> list[Path]:
        if self._tar is not None:
            self._close_file()
        finals = [self.directory / f"{self.split}-{i:05d}.tar" for i in range(len(self.tmp_paths))]
        for tmp, final in zip(self.tmp_paths, finals):
            os.replace(tmp, final)
        return finals

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._fh.close()
        for path in self.tmp_paths:
            path.unlink(missing_ok=True)


class WebDatasetShards:
    """Streams image records into ``wds/{split}-{i:05d}.tar``."""

    def __init__(self, release_dir: Path, splits: list[str], *, shard_bytes: int):
        directory = reset_dir(Path(release_dir) / "wds")
        self._tars = {split: _Tars(directory, split, shard_bytes) for split in splits}

    def add(self, split: str, record: dict) -> None:
        self._tars[split].add(record)

    def close(self) -> list[Path]:
        return [path for tars in self._tars.values() for path in tars.close()]

    def abort(self) -> None:
        for tars in self._tars.values():
            tars.abort()
