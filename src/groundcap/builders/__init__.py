"""Release formats: Parquet configs, WebDataset tars, COCO JSON and the checksum manifest.

Each builder streams image records (``add(split, record)``) and finalizes its files at ``close()``;
``ReleaseWriter`` fans one record out to all of them, so the build stage reads its input once. The
folder it fills is the Hub repo (DESIGN.md, "Splits and release"); the card and the manifest come
after it (``dataset_card.write_card``, then ``write_manifest``).
"""

from __future__ import annotations

from pathlib import Path

from groundcap.builders.checksums import verify_manifest, write_manifest
from groundcap.builders.coco import CocoJson
from groundcap.builders.parquet import ParquetShards, image_row, region_rows
from groundcap.builders.webdataset import WebDatasetShards
from groundcap.splits import ALL_SPLITS as SPLITS  # every split a release can hold

__all__ = [
    "SPLITS",
    "CocoJson",
    "ParquetShards",
    "ReleaseWriter",
    "WebDatasetShards",
    "image_row",
    "region_rows",
    "verify_manifest",
    "write_manifest",
]


class ReleaseWriter:
    """Writes every release format from one stream of records; use as a context manager.

    ``params`` is the whole params dict (sections ``build`` and ``release``). Each builder empties
    its own folder (data/, regions/, wds/, coco/) when it starts, so no stale shard survives. Every split in
    ``splits`` gets its Parquet shards even when it receives no record. On an exception inside the
    ``with`` block, temporary files are removed and no shard is published.
    """

    def __init__(self, release_dir: str | Path, params: dict, splits: tuple[str, ...] = SPLITS):
        build, release = params["build"], params["release"]
        splits = list(splits)
        self.splits = set(splits)
        self.counts = dict.fromkeys(splits, 0)
        self.builders = [
            ParquetShards(release_dir, splits, build),
            WebDatasetShards(release_dir, splits, shard_bytes=build["wds_shard_bytes"]),
            CocoJson(
                release_dir,
                splits,
                info={"description": release["pretty_name"], "version": str(release["version"])},
                license=release["license"],
            ),
        ]

    def add(self, split: str, record: dict) -> None:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; this release has {sorted(self.splits)}")
        for builder in self.builders:
            builder.add(split, record)
        self.counts[split] += 1

    def close(self) -> list[Path]:
        """Finalize every format; returns the files written."""
        return [path for builder in self.builders for path in builder.close()]

    def abort(self) -> None:
        for builder in self.builders:
            builder.abort()

    def __enter__(self) -> ReleaseWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
