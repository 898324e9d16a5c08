"""Release formats: Parquet configs, WebDataset tars, COCO JSON and the checksum manifest.

Each builder streams batches (``add_table``: Arrow tables of image records, ``columns.BATCH``) or
single records (``add(split, record)``) and finalizes its files at ``close()``; ``ReleaseWriter`` fans
a batch out to all of them. ``write_release`` is the build stage's writer: it joins work/ part by part
(``columns.join_part``) and writes each release folder in one process, or spreads the folders over
``executor.build_workers`` spawned processes (``release.py``); every file goes to a temporary name first and
all are renamed once every writer has finished. The
folder it fills is the Hub repo (docs/ARCHITECTURE.md, "Records"); the card and the manifest come
after it (``dataset_card.write_card``, then ``write_manifest``).
"""

from __future__ import annotations

from groundcap.builders.checksums import verify_manifest, write_manifest
from groundcap.builders.coco import CocoJson
from groundcap.builders.parquet import ParquetShards, image_row, region_rows
from groundcap.builders.release import write_release
from groundcap.builders.webdataset import WebDatasetShards
from groundcap.builders.writer import KINDS, SPLITS, ReleaseWriter

__all__ = [
    "SPLITS",
    "CocoJson",
    "ParquetShards",
    "ReleaseWriter",
    "WebDatasetShards",
    "KINDS",
    "image_row",
    "region_rows",
    "verify_manifest",
    "write_release",
    "write_manifest",
]
