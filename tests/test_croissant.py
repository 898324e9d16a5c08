"""croissant.json validated and read by mlcroissant, MLCommons' own reference library."""

from __future__ import annotations

import json

import mlcroissant as mlc
import numpy as np
import pytest

from groundcap import masks
from groundcap.dataset_card.card import limitations
from test_builders import PARAMS, PROVENANCE, RECORDS, build

NOT_DATED = 'Property "https://schema.org/datePublished" is recommended'  # no date: the same inputs, the same bytes


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("croissant") / "release")


def _dataset(release) -> mlc.Dataset:
    dataset = mlc.Dataset(jsonld=str(release / "croissant.json"))  # raises on any validation error
    issues = dataset.metadata.issues
    assert not issues.errors and [w for w in issues.warnings if NOT_DATED not in w] == []
    return dataset


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def test_croissant_validates_and_is_in_the_manifest(release):
    _dataset(release)
    manifest = {e["path"] for e in json.loads((release / "checksums.json").read_text())}
    assert "croissant.json" in manifest


def test_rai_fields_come_from_the_records(release):
    doc = json.loads((release / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    assert doc["version"] == str(PARAMS["release"]["version"])
    assert doc["license"] == ["unknown", f"annotations: {PARAMS['release']['annotations_license']}"]
    assert doc["rai:machineAnnotationTools"] == ["segment: grabcut v1 (opencv grabcut)",
                                                 "caption_regions: attributes v1 (measured attributes)"]
    assert doc["rai:dataLimitations"] == " ".join(limitations(PARAMS))
    for key in ("dataCollection", "dataAnnotationProtocol", "dataBiases", "personalSensitiveInformation"):
        assert doc[f"rai:{key}"].strip()
    assert "caption_regions: Write a short and a detailed caption" in doc["rai:dataAnnotationProtocol"]
    assert "too_few_regions" in doc["rai:dataAnnotationAnalysis"]
    text = (release / "croissant.json").read_text()
    assert "sk-x" not in text and str(release) not in text  # no credential, no local path
    assert PROVENANCE["caption_regions"]["api_key"] == "sk-x"


def test_default_config_records(release):
    records = list(_dataset(release).records(record_set="default"))
    expected = [(split, r) for split, rs in RECORDS.items() for r in rs]
    assert len(records) == len(expected)
    got = {_text(r["default/image_id"]): r for r in records}
    for split, record in expected:
        row = got[record["image_id"]]
        assert _text(row["default/split"]) == split
        assert row["default/image"].size == (record["width"], record["height"])
        assert _text(row["default/scene_caption"]) == record["scene_caption"]
        regions = row["default/regions"] if record["regions"] else []
        assert [_text(g["default/regions/label"]) for g in regions] == [g["label"] for g in record["regions"]]
        assert [_text(g["default/regions/short_caption"]) for g in regions] == [
            g["short_caption"] for g in record["regions"]]
        assert [_text(g["default/regions/detailed_caption"]) for g in regions] == [
            g["detailed_caption"] for g in record["regions"]]
        if record["regions"]:  # mlcroissant reads a struct inside a repeated field as lists beside it
            seg = row["default/regions/segmentation"]
            assert [_text(c) for c in seg["default/regions/segmentation/counts"]] == [
                g["segmentation"]["counts"] for g in record["regions"]]


def test_regions_config_records(release):
    records = list(_dataset(release).records(record_set="regions"))
    expected = {(r["image_id"], g["region_id"]): (split, r, g)
                for split, rs in RECORDS.items() for r in rs for g in r["regions"]}
    assert len(records) == len(expected)
    for row in records:
        split, record, region = expected[(_text(row["regions/image_id"]), row["regions/region_id"])]
        assert _text(row["regions/split"]) == split
        assert (row["regions/width"], row["regions/height"]) == (record["width"], record["height"])
        assert (_text(row["regions/label"]), _text(row["regions/short_caption"]),
                _text(row["regions/detailed_caption"])) == (
            region["label"], region["short_caption"], region["detailed_caption"])
        assert row["regions/bbox"] == pytest.approx(region["bbox"])
        seg = row["regions/segmentation"]
        rle = {"size": list(seg["regions/segmentation/size"]), "counts": _text(seg["regions/segmentation/counts"])}
        assert np.array_equal(masks.decode(rle), masks.decode(region["segmentation"]))


def test_the_demo_release_has_a_valid_croissant(sample_project):
    import pyarrow.parquet as pq

    release = sample_project / "release"
    dataset = _dataset(release)
    for config, directory in (("default", "data"), ("regions", "regions")):
        rows = sum(pq.read_metadata(f).num_rows for f in (release / directory).glob("*.parquet"))
        assert sum(1 for _ in dataset.records(record_set=config)) == rows
    doc = json.loads((release / "croissant.json").read_text())
    assert any("felzenszwalb" in line for line in doc["rai:machineAnnotationTools"])
    assert "scikit-image" in doc["rai:dataCollection"]


def test_a_hub_release_names_its_url_and_creator(tmp_path):
    import copy

    params = copy.deepcopy(PARAMS)
    params["release"]["repo_id"] = "acme/grounded-captions"
    release = build(tmp_path / "release", params)
    _dataset(release)
    doc = json.loads((release / "croissant.json").read_text())
    assert doc["url"] == "https://huggingface.co/datasets/acme/grounded-captions"
    assert doc["creator"] == {"@type": "sc:Organization", "name": "acme"}

