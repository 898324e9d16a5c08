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
import re
from pathlib import Path
from typing import TYPE_CHECKING

from groundcap.builders.files import SplitFiles
from groundcap.builders.parquet import region_fields
from groundcap.parts import reset_dir

if TYPE_CHECKING:
    from webdataset import TarWriter

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
        self.files = SplitFiles(directory, split, ".tar")
        self.shard_bytes = shard_bytes
        self._tar: TarWriter | None = None
        self._size = 0

    def add(self, record: dict) -> None:
        if self._tar is None:
            # imported here: webdataset imports torch (~1.3 s), which card, publish and diff never need
            from webdataset import TarWriter

            fh = self.files.open_next()
            self._tar = TarWriter(fh, user=OWNER, group=OWNER, mode=0o444, encoder=False, mtime=MTIME)
            self._size = 0
        self._size += self._tar.write(sample(record))
        if self._size >= self.shard_bytes:
            self._close_file()

    def _close_file(self) -> None:
        self._tar.close()
        self._tar = None
        self.files.close_current()

    def close(self) -> list[Path]:
        if self._tar is not None:
            self._close_file()
        split = self.files.split
        return self.files.publish(lambda i, n: f"{split}-{i:05d}.tar")

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
        self.files.discard()


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
