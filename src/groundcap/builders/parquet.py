"""Parquet shards of the release's two configs, written as a stream.

``default`` holds one row per image (``data/``), ``regions`` one row per region with its image
(``regions/``). Rows are projected onto ``schema.release_configs`` explicitly, so a missing field fails
here rather than becoming a silent null; ``build.pancap_text`` adds the scene caption rendered
Pancap-style (``phrase [x1, y1, x2, y2]``, 0-1 coordinates) as a column. Files carry
``features.arrow_schema``, whose ``huggingface`` metadata makes the ``image`` column decode as an Image,
and hold the encoded image bytes
(``Dataset.to_parquet`` would not embed them: DESIGN.md, "Known pitfalls"). A shard is written to a
hidden temporary name and renamed to ``{split}-{i:05d}-of-{n:05d}.parquet`` once ``n`` is known, so
the data_files globs never see a half-written shard. An empty split gets one shard with the schema
and no row group (see ``_Shards.close``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from groundcap import grounding
from groundcap.builders.files import SplitFiles
from groundcap.parts import reset_dir
from groundcap.schema import IMAGES_FEATURES, PANCAP_TEXT, release_configs

CONFIG_DIRS = {"default": "data", "regions": "regions"}
_REGION_KEYS = tuple(IMAGES_FEATURES["regions"].feature)


def region_fields(region: dict) -> dict:
    """A region projected onto the release's region fields (extra stage fields dropped)."""
    return {key: region[key] for key in _REGION_KEYS}


def _image(record: dict) -> dict:
    # path is dropped: only bytes travel, so no local path ever reaches a release file
    return {"bytes": record["image"]["bytes"], "path": None}


def image_row(record: dict, pancap_text: bool = False) -> dict:
    """The ``default`` config row of an image record."""
    row = {
        "image_id": record["image_id"],
        "image": _image(record),
        "width": record["width"],
        "height": record["height"],
        "regions": [region_fields(r) for r in record["regions"]],
        "scene_caption": record["scene_caption"],
        "qa_score": record["qa_score"],
    }
    if pancap_text:
        boxes = {r["region_id"]: r["bbox"] for r in record["regions"]}
        row[PANCAP_TEXT] = grounding.render_boxes(record["scene_caption"], boxes, record["width"], record["height"])
    return row


def region_rows(record: dict) -> list[dict]:
    """The ``regions`` config rows of an image record: one per region, each with the image embedded."""
    image = _image(record)
    return [
        {
            "image_id": record["image_id"],
            "image": image,
            "width": record["width"],
            "height": record["height"],
            **region_fields(r),
            "qa_score": record["qa_score"],
        }
        for r in record["regions"]
    ]


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

    A row group closes at ``row_group_rows`` rows or ``row_group_bytes`` of image bytes, whichever
    comes first: image rows are large, and readers (the Hub's viewer, ``datasets`` streaming) load a
    whole row group at a time.
    """

    def __init__(self, directory: Path, split: str, schema: pa.Schema, build: dict):
        self.files = SplitFiles(directory, split, ".parquet")
        self.schema, self.shard_bytes = schema, build["shard_bytes"]
        self.row_group_rows, self.row_group_bytes = build["row_group_rows"], build["row_group_bytes"]
        # zstd for the metadata columns; image bytes are stored as they are (JPEG/PNG: zstd gains ~3%
        # for a quarter of the write time), so the Hub's Xet storage, which cuts files by content,
        # finds an unchanged image again in the next release: Parquet's own content-defined chunking
        # saved no upload on top of that and cost a third of build (bench/growth.py). A dictionary
        # big enough for a whole row group stores an image once in it, however many region rows
        # repeat it (past the limit Parquet falls back to plain copies).
        self.compression = {path: "none" if path == "image.bytes" else "zstd" for path in _leaf_paths(schema)}
        self.dictionary_bytes = 2 * self.row_group_bytes
        self._rows: list[dict] = []
        self._bytes = 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            self._rows.append(row)
            self._bytes += len(row["image"]["bytes"])
            if len(self._rows) >= self.row_group_rows or self._bytes >= self.row_group_bytes:
                self._write(self._rows)
                self._rows, self._bytes = [], 0

    def _open(self) -> None:
        self._writer = pq.ParquetWriter(
            self.files.open_next(), self.schema, compression=self.compression,
            dictionary_pagesize_limit=self.dictionary_bytes, write_page_index=True,
        )

    def _write(self, rows: list[dict]) -> None:
        if self._writer is None:
            self._open()
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema), row_group_size=len(rows))
        if self.files.fh.tell() >= self.shard_bytes:
            self._close_file()

    def _close_file(self) -> None:
        self._writer.close()
        self._writer = None
        self.files.close_current()

    def close(self) -> list[Path]:
        if self._rows:
            self._write(self._rows)
            self._rows, self._bytes = [], 0
        if not self.files.tmp_paths:
            # An empty split still gets one shard: the schema and no row group (a zero-row row group
            # makes datasets' reader fail with "BatchSize must be greater than 0").
            self._open()
        if self._writer is not None:
            self._close_file()
        split = self.files.split
        return self.files.publish(lambda i, n: f"{split}-{i:05d}-of-{n:05d}.parquet")

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.files.discard()


class ParquetShards:
    """Streams image records into the ``default`` and ``regions`` Parquet shards of every split."""

    def __init__(self, release_dir: Path, splits: list[str], build: dict):
        self._shards = {}
        self._pancap = bool(build.get("pancap_text"))
        configs = release_configs(build)
        for config, dirname in CONFIG_DIRS.items():
            directory = reset_dir(Path(release_dir) / dirname)
            for split in splits:
                self._shards[config, split] = _Shards(directory, split, configs[config].arrow_schema, build)

    def add(self, split: str, record: dict) -> None:
        self._shards["default", split].add([image_row(record, self._pancap)])
        self._shards["regions", split].add(region_rows(record))

    def close(self) -> list[Path]:
        return [path for shards in self._shards.values() for path in shards.close()]

    def abort(self) -> None:
        for shards in self._shards.values():
            shards.abort()
