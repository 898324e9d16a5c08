"""Parquet shards of the release's two configs, written as a stream.

``default`` holds one row per image with its bytes (``data/``), ``regions`` one row per region,
annotations only, keyed by ``image_id`` (``regions/``): each image's bytes are released once
(``releases.regions.load_regions`` joins the two for a region trainer). Both are built column-wise from
batches (``columns.default_table``, ``regions_table``), never row by row; records given as
dicts (``ReleaseWriter.add``) are made a batch first, projected onto the release's region fields, so a
missing field fails there rather than becoming a silent null; ``build.pancap_text`` adds the scene caption rendered
Pancap-style (``phrase [x1, y1, x2, y2]``, 0-1 coordinates) as a column. Files carry
``features.arrow_schema``, whose ``huggingface``
metadata makes the ``image`` column decode as an Image, and hold the encoded image bytes
(``Dataset.to_parquet`` would not embed them: docs/ARCHITECTURE.md, "QA, dedup, splits, audits,
release", known pitfalls). A shard is written to a hidden temporary name and renamed to
``{split}-{i:05d}-of-{n:05d}.parquet`` once ``n`` is known, so the data_files globs never see a
half-written shard. An empty split gets one shard with the schema and no row group (see ``_Shards.close``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundcap.builders.columns import PANCAP_TEXT, REGION_KEYS, default_table, from_records, regions_table
from groundcap.builders.files import SplitFiles
from groundcap.storage.parts import reset_dir

CONFIG_DIRS = {"default": "data", "regions": "regions"}
_REGION_KEYS = REGION_KEYS


def region_fields(region: dict) -> dict:
    """A region projected onto the release's region fields (extra stage fields dropped)."""
    return {key: region[key] for key in _REGION_KEYS}


def image_row(record: dict, pancap_text: bool = False) -> dict:
    """The ``default`` config row of an image record (as a dict: for callers and tests, not the build)."""
    from groundcap.builders.features import release_configs

    schema = release_configs({"pancap_text": pancap_text})["default"].arrow_schema
    return default_table(from_records("", [record]), schema).to_pylist()[0]


def region_rows(record: dict) -> list[dict]:
    """The ``regions`` config rows of an image record: one per region, keyed by its image_id."""
    from groundcap.builders.features import release_configs

    configs = release_configs({"pancap_text": False})
    default = default_table(from_records("", [record]), configs["default"].arrow_schema)
    return regions_table(default, configs["regions"].arrow_schema).to_pylist()


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of ``schema`` (``image.bytes``, ``regions.list.element.label``, ...)."""

    def walk(name: str, type_: pa.DataType) -> list[str]:
        if pa.types.is_struct(type_):
            fields = [type_.field(i) for i in range(type_.num_fields)]
            return [p for f in fields for p in walk(f"{name}.{f.name}", f.type)]
        if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
            return walk(f"{name}.list.element", type_.value_type)
        return [name]

    return [p for field in schema for p in walk(field.name, field.type)]


class _Shards:
    """The shards of one (config, split): rows buffered into row groups, a new file past ``shard_bytes``.

    A row group closes after the last row of an image, at ``row_group_rows`` images or
    ``row_group_bytes`` of image bytes, whichever comes first: image rows are large, and readers (the
    Hub's viewer, ``datasets`` streaming) load a whole row group at a time; the regions config's row
    groups so hold the regions of the images of the default config's. Rows arrive as Arrow tables
    (an image's rows never split across two); a row group is written as one contiguous table (the
    same bytes whatever the tables it was cut from).
    """

    def __init__(self, directory: Path, split: str, schema: pa.Schema, build: dict):
        self.files = SplitFiles(directory, split, ".parquet")
        self.schema, self.shard_bytes = schema, build["shard_bytes"]
        self.row_group_rows, self.row_group_bytes = build["row_group_rows"], build["row_group_bytes"]
        # zstd for the metadata columns; image bytes are stored as they are (JPEG/PNG: zstd gains ~3%
        # for a quarter of the write time), so the Hub's Xet storage, which cuts files by content,
        # finds an unchanged image again in the next release: Parquet's own content-defined chunking
        # saved no upload on top of that and cost a third of build (bench/growth.py).
        # Each image is in one row only: no dictionary for its bytes (it would be a copy with an index).
        self.compression = {path: "none" if path == "image.bytes" else "zstd" for path in _leaf_paths(schema)}
        self.dictionary = [path for path in _leaf_paths(schema) if path != "image.bytes"]
        self.has_image = "image" in schema.names
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._bytes = 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table) -> None:
        """Append rows (a table in ``schema``, whole images), writing every row group they complete."""
        if not len(table):
            return
        ids = table["image_id"].to_numpy(zero_copy_only=False)
        ends = np.append(ids[1:] != ids[:-1], True)  # the last row of an image
        sizes = (pc.fill_null(pc.binary_length(pc.struct_field(table["image"], "bytes")), 0).to_numpy()
                 if self.has_image else np.zeros(len(table), dtype=np.int64))
        start = 0
        for i, (size, end) in enumerate(zip(sizes.tolist(), ends.tolist(), strict=True)):
            self._rows += int(end)
            self._bytes += size
            if end and (self._rows >= self.row_group_rows or self._bytes >= self.row_group_bytes):
                self._pending.append(table.slice(start, i + 1 - start))
                start = i + 1
                self._flush()
        if start < len(table):
            self._pending.append(table.slice(start))

    def _flush(self) -> None:
        table = pa.concat_tables(self._pending).combine_chunks()
        self._pending, self._rows, self._bytes = [], 0, 0
        self._write(table)

    def _open(self) -> None:
        self._writer = pq.ParquetWriter(
            self.files.open_next(), self.schema, compression=self.compression,
            use_dictionary=self.dictionary, write_page_index=True,
        )

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._open()
        self._writer.write_table(table, row_group_size=len(table))
        if self.files.fh.tell() >= self.shard_bytes:
            self._close_file()

    def _close_file(self) -> None:
        self._writer.close()
        self._writer = None
        self.files.close_current()

    def finish(self) -> list[tuple[Path, Path]]:
        """Write what is buffered and close the last file; ``(temporary, final)`` path pairs."""
        if self._pending:
            self._flush()
        if not self.files.tmp_paths:
            # An empty split still gets one shard: the schema and no row group (a zero-row row group
            # makes datasets' reader fail with "BatchSize must be greater than 0").
            self._open()
        if self._writer is not None:
            self._close_file()
        split = self.files.split
        return self.files.finals(lambda i, n: f"{split}-{i:05d}-of-{n:05d}.parquet")

    def close(self) -> list[Path]:
        return self.files.publish(self.finish())

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.files.discard()


class ParquetShards:
    """Streams batches (or image records) into the ``default`` and ``regions`` Parquet shards of every
    split; ``configs`` picks which of the two this one writes (both by default). With ``origin_kind`` (the
    source's kind) the ``default`` rows hold no pixels, only what identifies each image (release.images:
    reference)."""

    def __init__(self, release_dir: Path, splits: list[str], build: dict,
                 configs: tuple[str, ...] = tuple(CONFIG_DIRS), schemas: dict[str, pa.Schema] | None = None,
                 origin_kind: str | None = None):
        if schemas is None:
            from groundcap.builders.features import release_configs  # imports datasets: a worker is given the schemas

            images = "reference" if origin_kind else "embed"
            schemas = {name: features.arrow_schema for name, features in release_configs(build, images).items()}
        self.schemas, self.origin_kind = schemas, origin_kind
        self._shards = {}
        self.configs = configs
        for config in configs:
            directory = reset_dir(Path(release_dir) / CONFIG_DIRS[config])
            for split in splits:
                self._shards[config, split] = _Shards(directory, split, schemas[config], build)

    def add(self, split: str, record: dict) -> None:
        self.add_table(split, from_records(split, [record]))

    def add_table(self, split: str, batch: pa.Table) -> None:
        schema = self.schemas["default"]
        if "default" not in self.configs:  # the regions config needs none of these
            for name in (PANCAP_TEXT, "origin"):
                if name in schema.names:
                    schema = schema.remove(schema.get_field_index(name))
        default = default_table(batch, schema, self.origin_kind)
        if "default" in self.configs:
            self._shards["default", split].add(default)
        if "regions" in self.configs:
            self._shards["regions", split].add(regions_table(default, self.schemas["regions"]))

    def finish(self) -> list[tuple[Path, Path]]:
        return [pair for shards in self._shards.values() for pair in shards.finish()]

    def close(self) -> list[Path]:
        return [path for shards in self._shards.values() for path in shards.close()]

    def abort(self) -> None:
        for shards in self._shards.values():
            shards.abort()
