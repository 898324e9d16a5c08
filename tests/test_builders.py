"""A tiny release built from synthetic records, read back with the tools its users will use."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from groundcap import grounding, licenses, masks
from groundcap.builders import SPLITS, ReleaseWriter, features, verify_manifest, write_manifest
from groundcap.builders.coco import CocoJson
from groundcap.builders.features import PANCAP_TEXT, REGIONS_FEATURES, release_configs
from groundcap.dataset_card import size_category, validate_card, write_card
from groundcap.dataset_card.croissant import write_croissant
from groundcap.dataset_card.plots import write_plots
from groundcap.params import load as load_params
from groundcap.pipeline import order
from groundcap.releases import versions

PARAMS = load_params()
# Tiny shards, so rolling and the -of-N naming are exercised: one Parquet shard per row group of 2
# images, one tar per image (the opt-in formats on).
PARAMS["build"].update(shard_bytes=1, wds_shard_bytes=1, row_group_rows=2, formats=["webdataset", "coco"])
IMAGES_FEATURES = release_configs(PARAMS["build"])["default"]  # with the Pancap-style column (the default)
PROVENANCE = {
    "groundcap": "0.1.0",
    "segment": [{"backend": "grabcut", "version": "1", "model": "opencv grabcut", "params_hash": "abc123"}],
    "caption_regions": {"backend": "attributes", "version": "1", "model": "measured attributes", "api_key": "sk-x"},
}
QA = {"images_in": 5, "images_passed": 4, "reasons": {"too_few_regions": 1}}


def _image(width: int, height: int, fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _region(region_id: int, mask: np.ndarray, label: str) -> dict:
    rle = masks.encode(mask)
    return {
        "region_id": region_id,
        "bbox": masks.bbox(rle),
        "area": masks.area(rle),
        "segmentation": rle,
        "label": label,
        "granularity": "object",
        "parent_id": None,
        "source": "synthetic",
        "short_caption": f"a {label}",
        "detailed_caption": f"a {label} with {region_id} sides | tested",
        "predicted_iou": 0.9,  # a stage field the release drops
    }


def _record(seed: int, width: int, height: int, fmt: str, labels: list[str]) -> dict:
    data = _image(width, height, fmt, seed)
    yy, xx = np.mgrid[:height, :width]
    regions = []
    for i, label in enumerate(labels, 1):
        mask = ((xx - width * i / (len(labels) + 1)) ** 2 + (yy - height / 2) ** 2) < (min(width, height) / 4) ** 2
        regions.append(_region(i, mask, label))
    caption = " and ".join(f"<r{r['region_id']}>{r['short_caption']}</r{r['region_id']}>" for r in regions)
    return {
        "image_id": hashlib.sha256(data).hexdigest()[:16],
        "image": {"bytes": data, "path": None},
        "format": fmt,
        "width": width,
        "height": height,
        "regions": regions,
        "scene_caption": caption or "an empty scene",
        "qa_score": 0.5 + seed / 10,
        "redactions": [],
    }


RECORDS = {
    "train": [
        _record(1, 40, 30, "PNG", ["dog", "cat"]),
        _record(2, 32, 48, "JPEG", ["dog"]),
        _record(3, 24, 24, "PNG", []),
    ],
    "validation": [_record(4, 50, 20, "JPEG", ["car", "dog", "tree"])],
    "test": [],
}


def build(release_dir, params=PARAMS, records_by_split=RECORDS, qa_summary=QA):
    """What the build and card stages do, on the synthetic records."""
    with ReleaseWriter(release_dir, params) as writer:
        for split, records in records_by_split.items():
            for record in records:
                writer.add(split, copy.deepcopy(record))
    changelog = versions.changelog(release_dir, params["release"])
    versions.write_changelog(release_dir, changelog)
    stages = list(order.ORDER)
    write_card(release_dir, params, stages=stages, provenance=PROVENANCE, qa_summary=qa_summary, changelog=changelog,
               plots=write_plots(release_dir, SPLITS))
    write_croissant(release_dir, params, stages=stages, provenance=PROVENANCE, qa_summary=QA)
    write_manifest(release_dir)
    return release_dir


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("a") / "release")


def _by_id():
    return {r["image_id"]: r for records in RECORDS.values() for r in records}


def test_layout(release):
    names = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert "data/train-00000-of-00002.parquet" in names and "data/train-00001-of-00002.parquet" in names
    assert "data/test-00000-of-00001.parquet" in names  # empty split: one zero-row shard
    assert "regions/test-00000-of-00001.parquet" in names
    assert not any(n.startswith("wds/test") for n in names)  # empty split: no tar, no index
    assert [n for n in names if n.startswith("wds/train")] == [
        *(f"wds/train-{i:05d}.tar" for i in range(3)), "wds/train.index.json"]
    assert {"README.md", "croissant.json", "checksums.json", "coco/train.json", "coco/validation.json",
            "coco/test.json"} <= set(names)
    assert not any(n.rsplit("/", 1)[-1].startswith(".") for n in names)  # no temporary file left


def test_load_default_config(release, tmp_path):
    from datasets import load_dataset

    ds = load_dataset(str(release), cache_dir=str(tmp_path))
    # the empty test split is not declared: datasets 5.2 cannot load a DatasetDict with an empty split
    assert {split: ds[split].num_rows for split in ds} == {"train": 3, "validation": 1}
    expected = _by_id()
    for split in ds:
        assert ds[split].features == IMAGES_FEATURES
        for row in ds[split]:
            record = expected[row["image_id"]]
            assert row["image"].size == (record["width"], record["height"])
            assert [r["region_id"] for r in row["regions"]] == [r["region_id"] for r in record["regions"]]
            for region in row["regions"]:
                rle = region["segmentation"]
                assert masks.decode(rle).shape == (record["height"], record["width"])
                assert region["area"] == masks.area(rle)
                assert region["bbox"] == pytest.approx(masks.bbox(rle))
            assert row["scene_caption"] == record["scene_caption"]
            boxes = {r["region_id"]: r["bbox"] for r in record["regions"]}
            rendered = grounding.render_boxes(record["scene_caption"], boxes, row["width"], row["height"])
            assert row[PANCAP_TEXT] == rendered
    assert ds["train"][0][PANCAP_TEXT] == "a dog [0.150, 0.267, 0.525, 0.767] and a cat [0.500, 0.267, 0.875, 0.767]"


def test_pancap_text_is_optional(tmp_path):
    from datasets import load_dataset

    params = copy.deepcopy(PARAMS)
    params["build"]["pancap_text"] = False
    release = build(tmp_path / "release", params)
    assert validate_card(release / "README.md") == []
    ds = load_dataset(str(release), cache_dir=str(tmp_path / "cache"))
    assert PANCAP_TEXT not in ds["train"].features and PANCAP_TEXT not in (release / "README.md").read_text()


def test_row_groups_close_at_rows_or_image_bytes(tmp_path):
    import pyarrow.parquet as pq

    params = copy.deepcopy(PARAMS)
    smallest = min(len(r["image"]["bytes"]) for r in RECORDS["train"])
    params["build"].update(shard_bytes=10**9, row_group_rows=100, row_group_bytes=smallest)  # bytes decide
    with ReleaseWriter(tmp_path, params) as writer:
        for record in RECORDS["train"]:
            writer.add("train", copy.deepcopy(record))
    meta = pq.read_metadata(tmp_path / "data" / "train-00000-of-00001.parquet")
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1, 1, 1]


def test_regions_hold_no_image_bytes(tmp_path):
    """The regions config is annotations keyed by image_id: the image's bytes are in data/ only, stored
    uncompressed without a dictionary, the other columns in zstd; a row group holds whole images."""
    import pyarrow.parquet as pq

    params = load_params()
    params["build"]["row_group_rows"] = 1
    records = [_record(5, 300, 200, "PNG", ["dog", "cat", "car"]), _record(6, 300, 200, "PNG", ["tree", "dog"])]
    with ReleaseWriter(tmp_path, params) as writer:
        for record in records:
            writer.add("train", copy.deepcopy(record))
    data, regions = (tmp_path / d / "train-00000-of-00001.parquet" for d in ("data", "regions"))
    assert "image" not in pq.read_schema(regions).names
    assert regions.stat().st_size < 20_000 < sum(len(r["image"]["bytes"]) for r in records) < data.stat().st_size
    assert [pq.ParquetFile(regions).metadata.row_group(i).num_rows for i in range(2)] == [3, 2]
    chunks = pq.read_metadata(data).row_group(0)
    columns = {chunks.column(i).path_in_schema: chunks.column(i) for i in range(chunks.num_columns)}
    image = columns.pop("image.bytes")
    assert image.compression == "UNCOMPRESSED" and not image.has_dictionary_page
    assert {c.compression for c in columns.values()} == {"ZSTD"}
    assert not [*(tmp_path / "wds").iterdir(), *(tmp_path / "coco").iterdir()]  # opt-in formats


def test_load_regions_attaches_pixels_and_masks(release, tmp_path):
    from groundcap.releases.regions import load_regions

    ds = load_regions(str(release), "validation", cache_dir=str(tmp_path))
    record = RECORDS["validation"][0]
    assert ds.num_rows == 3
    for row, region in zip(ds.shuffle(seed=0).sort("region_id"), record["regions"], strict=True):
        assert (row["image_id"], row["region_id"], row["short_caption"]) == (
            record["image_id"], region["region_id"], region["short_caption"])
        assert np.array_equal(np.asarray(row["image"]), np.asarray(Image.open(io.BytesIO(record["image"]["bytes"]))))
        assert np.array_equal(row["mask"], masks.decode(region["segmentation"]))


def test_load_regions_config(release, tmp_path):
    from datasets import load_dataset

    ds = load_dataset(str(release), "regions", cache_dir=str(tmp_path))
    assert {split: ds[split].num_rows for split in ds} == {"train": 3, "validation": 3}  # one row per region
    assert ds["validation"].features == REGIONS_FEATURES
    row = ds["validation"][2]
    record = RECORDS["validation"][0]
    assert (row["image_id"], row["region_id"], row["label"]) == (record["image_id"], 3, "tree")
    assert (row["width"], row["height"]) == (record["width"], record["height"]) and "image" not in row
    assert np.array_equal(masks.decode(row["segmentation"]), masks.decode(record["regions"][2]["segmentation"]))


def test_empty_split_shard_carries_the_schema(release):
    import pyarrow.parquet as pq
    from datasets import Features

    for directory, declared in (("data", IMAGES_FEATURES), ("regions", REGIONS_FEATURES)):
        shard = pq.ParquetFile(release / directory / "test-00000-of-00001.parquet")
        assert shard.metadata.num_rows == 0
        assert Features.from_arrow_schema(shard.schema_arrow) == declared


def test_coco(release):
    from pycocotools.coco import COCO

    categories = None
    for split, records in RECORDS.items():
        coco = COCO(str(release / "coco" / f"{split}.json"))
        assert len(coco.getAnnIds()) == sum(len(r["regions"]) for r in records)
        assert [coco.imgs[i]["image_id_str"] for i in sorted(coco.imgs)] == [r["image_id"] for r in records]
        names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
        assert names == (categories or names)  # the same category ids in every split
        categories = names
        for image_id, record in zip(sorted(coco.imgs), records, strict=True):
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
            for ann, region in zip(anns, record["regions"], strict=True):
                assert np.array_equal(coco.annToMask(ann).astype(bool), masks.decode(region["segmentation"]))
                assert names[ann["category_id"]] == region["label"]
    assert list(categories.values()) == ["car", "cat", "dog", "tree"]
    assert coco.dataset["licenses"] == [{"id": 1, "name": licenses.NOT_STATED, "url": ""}]  # the records state none


@pytest.mark.parametrize("override", [None, "test-images"])
def test_coco_names_each_images_licence_or_the_override(tmp_path, override):
    stated = ["CC-BY-NC-2.0", None, "CC0-1.0"]
    records = [{**copy.deepcopy(r), "license": stated[i % 3]} for i, r in enumerate(RECORDS["train"])]
    writer = CocoJson(tmp_path, ["train"], info={}, override=override)
    for record in records:
        writer.add("train", record)
    writer.close()
    doc = json.loads((tmp_path / "coco" / "train.json").read_text())
    by_id = {entry["id"]: (entry["name"], entry["url"]) for entry in doc["licenses"]}
    expected = [override or r["license"] or licenses.NOT_STATED for r in records]
    assert [by_id[image["license"]][0] for image in doc["images"]] == expected
    assert sorted(name for name, _ in by_id.values()) == sorted(set(expected))
    assert by_id.get(1) == (("CC-BY-NC-2.0", "https://creativecommons.org/licenses/by-nc/2.0/") if override is None
                            else ("test-images", ""))


def test_webdataset(release):
    import webdataset as wds

    expected = _by_id()
    urls = [str(p) for p in sorted((release / "wds").glob("train-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [r["image_id"] for r in RECORDS["train"]]
    for sample in samples:
        record = expected[sample["__key__"]]
        ext = {"PNG": "png", "JPEG": "jpg"}[record["format"]]
        assert sample[ext] == record["image"]["bytes"]
        meta = json.loads(sample["json"])
        assert meta["regions"] == [{k: v for k, v in r.items() if k != "predicted_iou"} for r in record["regions"]]
        for key in ("width", "height", "qa_score", "scene_caption"):
            assert meta[key] == record[key]


def test_rebuild_is_byte_identical(release, tmp_path):
    other = build(tmp_path / "elsewhere" / "release")
    assert (other / "checksums.json").read_bytes() == (release / "checksums.json").read_bytes()
    assert verify_manifest(other) == []


def test_verify_manifest_catches_changes(tmp_path):
    release = build(tmp_path / "release")
    shard = release / "data" / "validation-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"!")
    (release / "extra.txt").write_text("x")
    (release / "coco" / "test.json").unlink()
    assert sorted(verify_manifest(release)) == [
        "missing: coco/test.json",
        "not in manifest: extra.txt",
        "sha256 differs: data/validation-00000-of-00001.parquet",
    ]


def test_card(release, tmp_path):
    from huggingface_hub import DatasetCard

    assert validate_card(release / "README.md") == []
    text = (release / "README.md").read_text()
    card = DatasetCard(text)
    assert card.data.license == "unknown"  # no source stated a licence for these records (tests/test_licenses.py)
    assert card.data.size_categories == ["n<1K"]
    assert [c["config_name"] for c in card.data.configs] == ["default", "regions"]
    assert "| train | 3 | 3 | 1 | 0 | 2 |" in text  # images, regions, regions/image mean, min, max
    assert "| validation | 1 | 3 | 3 | 3 | 3 |" in text
    assert "| test | 0 | 0 | – |" in text
    assert "not declared" in text and "`data/test-*`" in text
    assert "dog (2), cat (1)" in text
    assert "too_few_regions" in text and "grabcut" in text
    assert "sk-x" not in text  # credential-like provenance keys are dropped
    assert "/tmp" not in text and str(release) not in text and str(tmp_path) not in text
    assert "measured attributes" in text  # limitations follow the params (embedded captioner)
    assert "| 0.1.0 | – | train: 3, validation: 1 |" in text  # changelog: first version, images per split
    assert "![Regions per image](plots/regions_per_image.png)" in text
    assert "| qa / consistency / min_similarity | 0.5 |" in text and "| segment / min_area_frac | 0.005 |" in text
    assert 'load_dataset("path/to/groundcap-sample/v0.1.0")' in text  # no repo_id: a folder target's layout


def test_the_card_reports_entity_coverage_and_regions_per_granularity(tmp_path):
    """Coverage counts stuff and object regions (never overlapping) and not parts, which lie in their entity."""
    from groundcap.dataset_card.stats import split_stats

    record = _record(7, 40, 30, "PNG", [])
    top, dog, nose = (np.zeros((30, 40), bool) for _ in range(3))
    top[:12], dog[15:25, 4:40], nose[18:20, 8:12] = True, True, True
    record["regions"] = [{**_region(0, top, "sky"), "granularity": "stuff"}, _region(1, dog, "dog"),
                         {**_region(2, nose, "nose"), "granularity": "part", "parent_id": 1}]
    release = build(tmp_path / "release", records_by_split={"train": [record, _record(8, 24, 24, "PNG", [])],
                                                            "validation": [], "test": []})
    stats = split_stats(release, "train")
    assert stats["granularity"] == {"stuff": 1, "object": 1, "part": 1}
    assert stats["coverage"] == {"mean": pytest.approx(0.35), "median": pytest.approx(0.35), "min": 0.0}  # 0.7, 0
    text = (release / "README.md").read_text()
    assert "| split | entity coverage (mean) | median | min | stuff regions | object regions | part regions |" in text
    assert "| train | 0.35 | 0.35 | 0 | 1 | 1 | 1 |" in text


def test_a_new_version_diffs_against_the_previous_and_carries_its_changelog(release, tmp_path):
    from groundcap.releases import diff

    params = copy.deepcopy(PARAMS)
    params["release"].update(version="0.2.0", previous=str(release))
    changed = copy.deepcopy(RECORDS)
    changed["train"][0]["scene_caption"] = "a new caption"
    changed["validation"].append(_record(5, 30, 30, "PNG", ["bird"]))
    removed = changed["train"].pop(2)
    new = build(tmp_path / "v2", params, changed)
    entries = json.loads((new / "changelog.json").read_text())
    assert [e["version"] for e in entries] == ["0.1.0", "0.2.0"]
    assert entries[-1] | {"images": None} == {"version": "0.2.0", "previous": "0.1.0", "images": None,
                                              "added": 1, "removed": 1, "changed": 1, "moved": 0}
    result = diff.compare(diff.index(str(release)), diff.index(str(new)))
    assert result.removed == {"train": [removed["image_id"]]}
    assert result.changed == {"train": [RECORDS["train"][0]["image_id"]]}
    assert result.unchanged == 2
    text = (new / "README.md").read_text()
    assert "| 0.2.0 | 0.1.0 | train: 2, validation: 2 | 1 | 1 | 1 | 0 |" in text
    params["release"]["version"] = "0.1.0"  # not higher than the previous release's
    with pytest.raises(ValueError, match="must be higher"):
        versions.changelog(str(new), params["release"])


def test_validate_card_catches_missing_files(tmp_path):
    release = build(tmp_path / "release")
    for shard in (release / "regions").glob("validation-*"):
        shard.unlink()
    problems = validate_card(release / "README.md")
    assert len(problems) == 1 and "regions, split validation" in problems[0]


def test_aborted_build_publishes_nothing(tmp_path):
    with pytest.raises(RuntimeError), ReleaseWriter(tmp_path, PARAMS) as writer:
        writer.add("train", RECORDS["train"][0])
        raise RuntimeError("interrupted")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_files_reach_the_disk_before_their_rename_and_the_folders_after(tmp_path, monkeypatch):
    """Durability is settled once, when the build publishes: no fsync while writing, every temporary file
    fsynced before the first rename, each folder once after the last (a crash leaves hidden temporaries, or
    whole files under their final names)."""
    import os
    from pathlib import Path

    from groundcap.builders.files import SplitFiles

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", Path(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    writer = ReleaseWriter(tmp_path, PARAMS)
    for split, records in RECORDS.items():
        for record in records:
            writer.add(split, copy.deepcopy(record))
    pairs = writer.finish()
    assert events == []  # nothing flushed file by file while writing
    SplitFiles.publish(pairs)
    renamed = [path for kind, path in events if kind == "rename"]
    first, last = events.index(("rename", renamed[0])), events.index(("rename", renamed[-1]))
    assert sorted(renamed) == sorted(tmp for tmp, _ in pairs)
    assert sorted(path for _, path in events[:first]) == sorted(renamed)
    assert sorted(path for _, path in events[last + 1:]) == [tmp_path / d for d in ("coco", "data", "regions", "wds")]


def test_size_category():
    assert [size_category(n) for n in (0, 999, 1000, 9_000, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "1M<n<10M"
    ]  # fmt: skip


def _work_from_records(work, records_by_split, part_size=2):
    """work/ingest, segment, caption_regions, qa, split and redact parts holding ``records_by_split`` (every
    region passed, one image left unreleased), as the build stage reads them."""
    from groundcap import schema
    from groundcap.storage import parts

    rows = [(split, r) for split, records in records_by_split.items() for r in records]
    rows.insert(1, (None, _record(9, 20, 20, "PNG", ["cat"])))  # no split: not released
    for index, start in enumerate(range(0, len(rows), part_size)):
        chunk = rows[start:start + part_size]
        tables = {
            "ingest": ([{"image_id": r["image_id"], "source_path": "x", "format": r["format"], "width": r["width"],
                         "height": r["height"], "bytes": r["image"]["bytes"], "normalized": []} for _, r in chunk],
                       schema.IMAGE),
            "segment": ([{"image_id": r["image_id"], "regions": [{**g, "label_score": 1.0, "stability_score": 1.0,
                                                                   "text": None} for g in r["regions"]]}
                         for _, r in chunk], schema.REGIONS),
            "caption_regions": ([{"image_id": r["image_id"], "captions": [
                {"region_id": g["region_id"], "short": g["short_caption"], "detailed": g["detailed_caption"]}
                for g in reversed(r["regions"])]} for _, r in chunk], schema.CAPTIONS),
            "qa": ([{"image_id": r["image_id"], "score": r["qa_score"], "passed": True,
                     "scene_caption": r["scene_caption"],
                     "regions": [{"region_id": g["region_id"], "passed": True} for g in r["regions"]]}
                    for _, r in chunk], schema.QA),
            "split": ([{"image_id": r["image_id"], "split": split} for split, r in chunk], schema.SPLIT),
            "redact": ([{"image_id": r["image_id"], "redactions": r["redactions"]} for _, r in chunk], schema.REDACT),
        }
        for stage, (table_rows, table_schema) in tables.items():
            parts.write_part(table_rows, table_schema, work / stage, index)
    return work


def test_a_stage_part_missing_a_column_is_named(tmp_path):
    """The build reads each stage part's columns by name: one written without a column it needs is refused,
    named with the file, never read as if the column were empty."""
    import pyarrow.parquet as pq

    from groundcap.builders.columns import join_part
    from groundcap.errors import StageInputError
    from groundcap.storage import parts

    work = _work_from_records(tmp_path / "work", RECORDS)
    path = parts.part_path(work / "redact", 0)
    pq.write_table(pq.read_table(path).drop_columns(["error"]), path)
    with pytest.raises(StageInputError, match=r"redact/part-00000\.parquet has no column error"):
        join_part(work, 0)


def test_columns_constants_match_the_schema():
    from groundcap import schema
    from groundcap.builders import columns

    assert (columns.RLE, columns.BBOX, columns.PANCAP_TEXT) == (schema.RLE, schema.BBOX, features.PANCAP_TEXT)
    assert columns.REGION_KEYS == tuple(features.IMAGES_FEATURES["regions"].feature)
    assert columns.REDACTION == schema.REDACTION


def test_write_release_is_byte_identical_whatever_the_workers(tmp_path):
    """The build stage's path (work/ joined column-wise, folders dealt out to processes): one worker,
    two spawned workers and the record-by-record ReleaseWriter all write the same bytes."""
    from groundcap.builders import write_release

    work = _work_from_records(tmp_path / "work", RECORDS)
    digests = {}
    for name, workers in (("one", 1), ("two", 2)):
        out = tmp_path / name
        files = write_release(work, out, PARAMS, workers=workers)
        assert not [p for p in out.rglob(".*")]  # no temporary file left
        digests[name] = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    with ReleaseWriter(tmp_path / "records", PARAMS) as writer:
        for split, records in RECORDS.items():
            for record in records:
                writer.add(split, copy.deepcopy(record))
    digests["records"] = {p.relative_to(tmp_path / "records").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                          for p in (tmp_path / "records").rglob("*") if p.is_file()}
    assert len(digests["one"]) > 10 and digests["one"] == digests["two"] == digests["records"]


@pytest.mark.parametrize("indices", [[0, 1, 2, 3, 4], [0]])
def test_the_next_parts_are_joined_while_this_one_is_written_in_order_and_their_error_raised(monkeypatch, indices):
    """``builders.release.joined`` reads ``AHEAD`` parts ahead in threads: the first ones are submitted before the
    first batch is asked for (they are read while the writer sets up), the batches come in part order, a part is
    submitted only when the one ``AHEAD`` before it is taken, a later part's error reaches the caller, and fewer
    parts than ``AHEAD`` are all given."""
    from concurrent.futures import ThreadPoolExecutor

    from groundcap.builders import release

    assert release.AHEAD == 2
    started, lock = [], threading.Lock()

    def join(work, index, corrections):
        with lock:
            started.append(index)
        if index == 3:
            raise ValueError("part 3 is broken")
        return index

    monkeypatch.setattr(release, "join_part", join)
    with ThreadPoolExecutor(release.AHEAD) as reader:
        batches = release.joined(reader, "work", indices, None)
        deadline = time.monotonic() + 10
        while len(started) < min(2, len(indices)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(started) == indices[:2]  # before any batch was asked for
        if len(indices) == 1:
            assert list(batches) == [0]
            return
        assert next(batches) == 0 and 3 not in started  # part 2 may be read while part 0 is written, part 3 not yet
        assert [next(batches), next(batches)] == [1, 2]
        with pytest.raises(ValueError, match="part 3 is broken"):
            next(batches)
