"""The release read the way trainers read it: ``datasets`` streaming (over the folder and over a
folder-published version), ``webdataset`` with a shuffle buffer and PIL decoding, and ``wids`` random
access through the shard index. Each reader: its sample count, and one record equal to the Parquet row."""

from __future__ import annotations

import io
import json
import random
from functools import partial

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from groundcap.cli.app import app
from test_builders import RECORDS, build

COUNTS = {split: len(records) for split, records in RECORDS.items() if records}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("streaming") / "release")


def _parquet_rows(release, directory: str, split: str) -> list[dict]:
    shards = sorted((release / directory).glob(f"{split}-*.parquet"))
    return [row for shard in shards for row in pq.read_table(shard).to_pylist()]


def _pixels(image) -> np.ndarray:
    image = image if isinstance(image, Image.Image) else Image.open(io.BytesIO(image["bytes"]))
    return np.asarray(image.convert("RGB"))


def _same_as_parquet(release, split: str, image_id: str, image, regions: list[dict], scene_caption: str) -> None:
    row = next(r for r in _parquet_rows(release, "data", split) if r["image_id"] == image_id)
    assert np.array_equal(_pixels(image), _pixels(row["image"]))
    assert regions == row["regions"] and scene_caption == row["scene_caption"]


@pytest.mark.parametrize("published", [False, True], ids=["folder", "folder-published"])
def test_datasets_streaming(release, tmp_path, published):
    from datasets import load_dataset

    path = release
    if published:
        result = CliRunner().invoke(app, ["publish", "--to", str(tmp_path / "pub"), "--version", "0.1.0",
                                          "--release", str(release)])
        assert result.exit_code == 0, result.output
        path = tmp_path / "pub" / "v0.1.0"
    images = load_dataset(str(path), streaming=True)
    assert {split: sum(1 for _ in images[split]) for split in images} == COUNTS
    first = next(iter(images["validation"]))
    _same_as_parquet(release, "validation", first["image_id"], first["image"], first["regions"], first["scene_caption"])
    regions = load_dataset(str(path), "regions", streaming=True)
    assert {split: sum(1 for _ in regions[split]) for split in regions} == {"train": 3, "validation": 3}
    row = next(iter(regions["validation"]))
    assert row == _parquet_rows(release, "regions", "validation")[0]


def test_webdataset_shuffled_and_decoded(release):
    import webdataset as wds

    urls = [str(p) for p in sorted((release / "wds").glob("train-*.tar"))]
    pipeline = wds.WebDataset(urls, shardshuffle=False, empty_check=False).shuffle(100, rng=random.Random(0))
    samples = list(pipeline.decode("pil"))
    assert sorted(s["__key__"] for s in samples) == sorted(r["image_id"] for r in RECORDS["train"])
    sample = samples[0]
    image = sample.get("png") or sample.get("jpg")
    meta = sample["json"]  # decoded to a dict
    _same_as_parquet(release, "train", sample["__key__"], image, meta["regions"], meta["scene_caption"])


def test_wids_random_access(release, tmp_path):
    import wids
    from wids.wids_decode import default_decoder

    index = release / "wds" / "train.index.json"
    assert json.loads(index.read_text())["shardlist"][0] == {
        "url": "train-00000.tar", "nsamples": 1, "filesize": (release / "wds" / "train-00000.tar").stat().st_size}
    dataset = wids.ShardListDataset(str(index), cache_dir=str(tmp_path / "cache"),
                                    transformations=partial(default_decoder, format="PIL"))
    assert len(dataset) == COUNTS["train"]
    sample = dataset[2]  # random access: the last shard first
    key = sample["__key__"].lstrip("./")
    assert key == RECORDS["train"][2]["image_id"]
    ext = ".png" if ".png" in sample else ".jpg"
    meta = sample[".json"]  # decoded to a dict, the image to PIL
    _same_as_parquet(release, "train", key, sample[ext], meta["regions"], meta["scene_caption"])
    assert dataset[0]["__key__"].lstrip("./") == RECORDS["train"][0]["image_id"]
