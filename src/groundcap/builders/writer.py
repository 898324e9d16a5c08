"""``ReleaseWriter``: every release format written from one stream of records (one writer per process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from groundcap import licenses
from groundcap.builders.coco import CocoJson
from groundcap.builders.columns import from_records
from groundcap.builders.files import SplitFiles
from groundcap.builders.parquet import ParquetShards
from groundcap.builders.webdataset import WebDatasetShards
from groundcap.splits import ALL_SPLITS as SPLITS  # every split a release can hold
from groundcap.storage import atomic
from groundcap.storage.parts import reset_dir

KINDS = ("regions", "data", "wds", "coco")  # the release folders build writes, the costliest first
OPTIONAL_FORMATS = {"webdataset": "wds", "coco": "coco"}  # build.formats: opt-in formats and their folders


def source_kind(source: str) -> str:
    """The kind of a ``source:`` spec, as a reference release records it (``files``: a folder or a list)."""
    from groundcap.sources import KINDS as SOURCE_KINDS

    kind = source.partition(":")[0]
    return kind if kind in SOURCE_KINDS or kind == "sample" else "files"


class HydrateInfo:
    """``data/hydrate.json`` of a reference release: what ``groundcap hydrate`` needs to write the files an
    embedded build of the same run writes (the ``build`` params, ingest's limits, the blur's ``redact.cells``)."""

    NAME = "hydrate.json"

    def __init__(self, release_dir: str | Path, params: dict):
        self.final = Path(release_dir) / "data" / self.NAME
        ingest = {key: params["ingest"][key] for key in ("min_side", "max_pixels", "max_bytes", "animated")}
        self.info = {"images": "reference", "build": params["build"], "ingest": ingest,
                     "redact": {"cells": params["redact"]["cells"]}}
        self.tmp: Path | None = None

    def finish(self) -> tuple[Path, Path]:
        self.tmp = atomic.temporary(self.final)
        with open(self.tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.info, indent=1, sort_keys=True) + "\n")  # fsynced when published
        return self.tmp, self.final

    def abort(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class ReleaseWriter:
    """Writes every release format from one stream of batches or records; use as a context manager.

    ``params`` is the whole params dict (sections ``build`` and ``release``). Each builder empties
    its own folder (data/, regions/, wds/, coco/) when it starts, so no stale shard survives; ``kinds``
    picks the folders this writer owns (all by default). Each image's bytes are in data/ only: the
    WebDataset tars (a second copy) and the COCO JSON (a third copy of the annotations) are opt-in
    (``build.formats``); a folder not asked for is left empty, so DVC still finds its output. Every
    split in ``splits`` gets its Parquet shards even when it receives no record. On an exception inside
    the ``with`` block, temporary files are removed and no shard is published. ``schemas`` (config ->
    Arrow schema) spares a worker process the import of ``datasets``.
    """

    def __init__(self, release_dir: str | Path, params: dict, splits: tuple[str, ...] = SPLITS,
                 kinds: tuple[str, ...] = KINDS, schemas: dict[str, pa.Schema] | None = None):
        build, release = params["build"], params["release"]
        splits = list(splits)
        self.splits = set(splits)
        self.counts = dict.fromkeys(splits, 0)
        self.builders = []
        reference = release["images"] == "reference"
        formats = [f for f in build["formats"] if not (reference and f == "webdataset")]  # tars: hydrate's
        configs = tuple(c for c, d in (("default", "data"), ("regions", "regions")) if d in kinds)
        if configs:
            self.builders.append(ParquetShards(release_dir, splits, build, configs=configs, schemas=schemas,
                                               origin_kind=source_kind(params["source"]) if reference else None))
        self.hydrate = HydrateInfo(release_dir, params) if reference and "data" in kinds else None
        for name, folder in OPTIONAL_FORMATS.items():
            if folder in kinds and name not in formats:
                reset_dir(Path(release_dir) / folder)  # no file of an earlier build survives
        if "wds" in kinds and "webdataset" in formats:
            self.builders.append(WebDatasetShards(release_dir, splits, shard_bytes=build["wds_shard_bytes"]))
        if "coco" in kinds and "coco" in build["formats"]:
            self.builders.append(CocoJson(
                release_dir,
                splits,
                info={"description": release["pretty_name"], "version": str(release["version"])},
                override=licenses.override(release),
            ))

    def add(self, split: str, record: dict) -> None:
        self.add_table(from_records(split, [record]))

    def add_table(self, batch: pa.Table) -> None:
        """Add a batch (``columns.BATCH``: its ``split`` column says where each row goes)."""
        codes = pc.dictionary_encode(batch["split"]).combine_chunks()
        present = codes.dictionary.to_pylist()
        for split in present:
            if split not in self.splits:
                raise ValueError(f"unknown split {split!r}; this release has {sorted(self.splits)}")
        index = codes.indices.to_numpy(zero_copy_only=False)
        counts = np.bincount(index, minlength=len(present))
        if len(present) > 1:  # one take groups the rows by split, each split's in their order; then slices
            batch = batch.take(pa.array(np.argsort(index, kind="stable")))
        start = 0
        for split, count in zip(present, counts.tolist(), strict=True):
            rows = batch.slice(start, count)
            start += count
            for builder in self.builders:
                builder.add_table(split, rows)
            self.counts[split] += count

    def finish(self) -> list[tuple[Path, Path]]:
        """Finalize every format under temporary names; ``(temporary, final)`` path pairs."""
        pairs = [pair for builder in self.builders for pair in builder.finish()]
        return pairs + ([self.hydrate.finish()] if self.hydrate else [])

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
        if self.hydrate:
            self.hydrate.abort()

    def __enter__(self) -> ReleaseWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
