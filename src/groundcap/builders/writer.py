"""``ReleaseWriter``: every release format written from one stream of records (one writer per process)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from groundcap.builders.coco import CocoJson
from groundcap.builders.columns import from_records
from groundcap.builders.files import SplitFiles
from groundcap.builders.parquet import ParquetShards
from groundcap.builders.webdataset import WebDatasetShards
from groundcap.splits import ALL_SPLITS as SPLITS  # every split a release can hold

KINDS = ("regions", "data", "wds", "coco")  # the release folders build writes, the costliest first


class ReleaseWriter:
    """Writes every release format from one stream of batches or records; use as a context manager.

    ``params`` is the whole params dict (sections ``build`` and ``release``). Each builder empties
    its own folder (data/, regions/, wds/, coco/) when it starts, so no stale shard survives; ``kinds``
    picks the folders this writer owns (all by default). Every split in ``splits`` gets its Parquet
    shards even when it receives no record. On an exception inside the ``with`` block, temporary files
    are removed and no shard is published. ``schemas`` (config -> Arrow schema) spares a worker
    process the import of ``datasets``.
    """

    def __init__(self, release_dir: str | Path, params: dict, splits: tuple[str, ...] = SPLITS,
                 kinds: tuple[str, ...] = KINDS, schemas: dict[str, pa.Schema] | None = None):
        build, release = params["build"], params["release"]
        splits = list(splits)
        self.splits = set(splits)
        self.counts = dict.fromkeys(splits, 0)
        self.builders = []
        configs = tuple(c for c, d in (("default", "data"), ("regions", "regions")) if d in kinds)
        if configs:
            self.builders.append(ParquetShards(release_dir, splits, build, configs=configs, schemas=schemas))
        if "wds" in kinds:
            self.builders.append(WebDatasetShards(release_dir, splits, shard_bytes=build["wds_shard_bytes"]))
        if "coco" in kinds:
            self.builders.append(CocoJson(
                release_dir,
                splits,
                info={"description": release["pretty_name"], "version": str(release["version"])},
                license=release["license"] or "unknown",  # the images' licence the build stage declares
            ))

    def add(self, split: str, record: dict) -> None:
        self.add_table(from_records(split, [record]))

    def add_table(self, batch: pa.Table) -> None:
        """Add a batch (``columns.BATCH``: its ``split`` column says where each row goes)."""
        present = pc.unique(batch["split"]).to_pylist()
        for split in present:
            if split not in self.splits:
                raise ValueError(f"unknown split {split!r}; this release has {sorted(self.splits)}")
        for split in present:
            rows = batch if len(present) == 1 else batch.filter(pc.equal(batch["split"], split))
            for builder in self.builders:
                builder.add_table(split, rows)
            self.counts[split] += len(rows)

    def finish(self) -> list[tuple[Path, Path]]:
        """Finalize every format under temporary names; ``(temporary, final)`` path pairs."""
        return [pair for builder in self.builders for pair in builder.finish()]

    def close(self) -> list[Path]:
        """Finalize every format and publish it; returns the files written."""
        try:
            pairs = self.finish()
        except BaseException:
            self.abort()
            raise
        return SplitFiles.publish(pairs)

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
