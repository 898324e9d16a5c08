"""Each source kind through `groundcap run` to a release that `datasets.load_dataset` reads: one run per
kind. Given masks come back byte for byte where `segment.given` keeps them (`use` on COCO, `merge` on
SA-1B, whose extra regions all lie outside them); licences reach the card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

import source_fixtures as fx
from groundcap import licenses, masks
from groundcap.cli.app import app
from groundcap.dataset_card.escape import literal

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, source: str, given: str = "merge", release: str = "{}", build: str = "{}") -> Path:
    params = tmp_path / "params.yaml"
    params.write_text(f"segment: {{given: {given}}}\nrelease: {release}\nbuild: {build}\n")
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["run", "--source", source, "--workdir", str(work), "--params", str(params), "-q"])
    assert result.exit_code == 0, result.output
    return work


def _released(work: Path, tmp_path: Path) -> list[dict]:
    ds = load_dataset(str(work / "release"), "default", cache_dir=str(tmp_path / "hf"))
    rows = [row for split in ds for row in ds[split]]
    assert rows
    return rows


def _image_ids(root: Path, names: list[str]) -> dict[str, str]:
    """image_id -> file name: ingest keeps upright RGB JPEGs byte for byte, so the id is their hash."""
    return {hashlib.sha256((root / n).read_bytes()).hexdigest()[:16]: n for n in names}


def test_webdataset_release(tmp_path):
    work = _run(tmp_path, fx.write_webdataset(tmp_path / "wds"))
    rows = _released(work, tmp_path)
    ingested = pl.read_parquet(work / "work/ingest/*.parquet")
    assert ingested["source_path"].to_list()[0] == "train-00000.tar/000000.jpg"
    assert {row["image_id"] for row in rows} <= set(ingested["image_id"])
    rejects = pl.read_parquet(work / "reports/rejects.parquet")
    assert rejects["path"].to_list() == ["train-00001.tar/broken.png"]
    assert all(not r["source"].startswith("given") for row in rows for r in row["regions"])


def test_hf_folder_release_counts_licences_in_the_card(tmp_path):
    work = _run(tmp_path, fx.write_hf_folder(tmp_path / "hf"))
    rows = _released(work, tmp_path)
    card = (work / "release/README.md").read_text()
    licences = pl.read_parquet(work / "work/ingest/*.parquet").select("image_id", "license").rows()
    expected = {}
    for image_id, licence in licences:
        if image_id in {row["image_id"] for row in rows}:
            expected[licence] = expected.get(licence, 0) + 1
    for licence, n in expected.items():
        assert f"| {literal(licence)} | {n} |" in card  # the card escapes what the source said


def test_coco_release_uses_given_masks_byte_for_byte(tmp_path):
    source, given = fx.write_coco(tmp_path / "coco")
    work = _run(tmp_path, source, given="use", build="{formats: [coco]}")
    ids = _image_ids(tmp_path / "coco/images", list(given))
    rows = _released(work, tmp_path)
    for row in rows:
        assert [(r["label"], r["source"]) for r in row["regions"]] == [("cat", "given:coco"), ("box", "given:coco")]
        assert [r["segmentation"] for r in row["regions"]] == given[ids[row["image_id"]]]
    card = (work / "release/README.md").read_text()
    assert f"| {literal('CC-BY-2.0')} |" in card and "given:coco" in card
    assert DatasetCard(card).data.license == "other"  # two licences: the card lists them
    stated = dict(pl.read_parquet(work / "work/ingest/*.parquet").select("image_id", "license").rows())
    named = {}
    for f in (work / "release/coco").glob("*.json"):  # the COCO files name each image's own licence, with its link
        doc = json.loads(f.read_text())
        by_id = {entry["id"]: entry for entry in doc["licenses"]}
        assert all(entry["url"] == (licenses.link(entry["name"]) or "") for entry in by_id.values())
        named |= {image["image_id_str"]: by_id[image["license"]]["name"] for image in doc["images"]}
    assert named == {row["image_id"]: stated[row["image_id"]] for row in rows}
    assert len(set(named.values())) == 2


def test_sa1b_release_merges_segmenter_regions_outside_the_given_masks(tmp_path):
    source, given = fx.write_sa1b(tmp_path / "sa")
    # SA-1B's terms forbid embedding its images; these are the test's own, as the recorded override says
    work = _run(tmp_path, source, given="merge", release="{license: other, license_name: test-images, "
                "license_reason: 'made by the test suite'}")
    ids = _image_ids(tmp_path / "sa", list(given))
    rows = _released(work, tmp_path)
    added = 0
    for row in rows:
        mine = [r for r in row["regions"] if r["source"] == "given:sa1b"]
        assert [r["segmentation"] for r in mine] == given[ids[row["image_id"]]]
        taken = np.logical_or.reduce([masks.decode(r["segmentation"]) for r in mine])
        others = [r for r in row["regions"] if r["source"] != "given:sa1b"]
        assert all(not (masks.decode(r["segmentation"]) & taken).any() for r in others)
        added += len(others)
    assert added > 0
    rejects = pl.read_parquet(work / "reports/rejects.parquet")
    assert "no sa_9.json" in dict(rejects.select("path", "reason").rows())["sa_9.jpg"]
