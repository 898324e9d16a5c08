"""End to end: the sample through every stage, the release read back with each consumer's own library."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import skimage.data
import webdataset as wds
from datasets import load_dataset
from PIL import Image
from pycocotools.coco import COCO

from conftest import awkward_files
from groundcap import masks, params
from groundcap.builders import features, verify_manifest
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context
from groundcap.releases import diff
from groundcap.sources import sample

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")


def _run(root: Path, source: str) -> Path:
    p = params.defaults() | {"source": source}
    run_all(Context(root=root, params=p, progress=False))
    return root / "release"


@pytest.fixture(scope="module")
def release(sample_project) -> Path:
    return sample_project / "release"


def _load(release: Path, config: str, tmp_path: Path):
    return load_dataset(str(release), config, cache_dir=str(tmp_path / "hf"))


def test_default_config_loads_with_declared_features_and_valid_masks(release, tmp_path):
    ds = _load(release, "default", tmp_path)
    assert set(ds) == set(SPLITS) and all(ds[s].num_rows > 0 for s in SPLITS)
    assert sum(ds[s].num_rows for s in SPLITS) == 12  # every sample image passes
    for split in SPLITS:
        assert ds[split].features == features.release_configs(params.defaults()["build"])["default"]
        for row in ds[split]:
            assert row["image"].size == (row["width"], row["height"])
            assert row["regions"], row["image_id"]
            union = np.zeros((row["height"], row["width"]), dtype=int)
            for region in row["regions"]:
                m = masks.decode(region["segmentation"])
                assert m.shape == (row["height"], row["width"])
                assert int(m.sum()) == region["area"] > 0
                np.testing.assert_allclose(masks.bbox(region["segmentation"]), region["bbox"])
                assert region["short_caption"] and region["detailed_caption"]
                union += m
            assert union.max() == 1, "entity masks must not overlap"
            ids = {r["region_id"] for r in row["regions"]}
            refs = {int(x) for x in re.findall(r"<r(\d+)>", row["scene_caption"])}
            assert refs and refs <= ids


def test_regions_config_has_one_row_per_region(release, tmp_path):
    images = _load(release, "default", tmp_path)
    regions = _load(release, "regions", tmp_path)
    for split in SPLITS:
        expected = Counter({r["image_id"]: len(r["regions"]) for r in images[split]})
        assert Counter(regions[split]["image_id"]) == expected
        assert regions[split].features == features.REGIONS_FEATURES


def test_coco_json_has_one_annotation_per_region(release, tmp_path):
    images = _load(release, "default", tmp_path)
    for split in SPLITS:
        coco = COCO(str(release / "coco" / f"{split}.json"))
        assert len(coco.getAnnIds()) == sum(len(r["regions"]) for r in images[split])
        ann = coco.loadAnns(coco.getAnnIds()[:1])[0]
        assert coco.annToMask(ann).sum() == ann["area"]


def test_webdataset_tars_hold_the_parquet_images_and_regions(release, tmp_path):
    images = _load(release, "default", tmp_path)
    for split in SPLITS:
        tars = sorted(str(p) for p in (release / "wds").glob(f"{split}-*.tar"))
        seen = {}
        for wds_sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
            meta = json.loads(wds_sample["json"])
            img_bytes = wds_sample.get("jpg") or wds_sample.get("png")
            seen[meta["image_id"]] = (Image.open(io.BytesIO(img_bytes)).size, meta["regions"])
        parquet = {r["image_id"]: r for r in images[split]}
        assert set(seen) == set(parquet)
        for image_id, (size, regions) in seen.items():
            assert size == (parquet[image_id]["width"], parquet[image_id]["height"])
            assert [r["segmentation"]["counts"] for r in regions] == [
                r["segmentation"]["counts"] for r in parquet[image_id]["regions"]
            ]


def test_card_and_manifest(release):
    card = (release / "README.md").read_text()
    assert card.startswith("---\n") and "dataset_info" in card and "configs" in card
    assert str(release.parent) not in card and "/tmp" not in card
    assert verify_manifest(release) == []


def test_same_input_gives_byte_identical_release(release, tmp_path):
    again = _run(tmp_path / "again", "sample:")
    first = sorted(p.relative_to(release) for p in release.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        assert (release / rel).read_bytes() == (again / rel).read_bytes(), rel


@pytest.mark.slow
def test_cli_run_on_photos_mixed_with_broken_files(awkward_dir, tmp_path):
    for name in ("astronaut", "coffee", "rocket"):  # ordinary photos beside the awkward files
        Image.fromarray(getattr(skimage.data, name)()).save(awkward_dir / f"{name}.jpg", quality=92)
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "groundcap", "run", "--source", str(awkward_dir), "--workdir", str(work), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    expected = awkward_files()
    good = {n for n, (_, e) in expected.items() if e == "ok"} | {f"{n}.jpg" for n in ("astronaut", "coffee", "rocket")}
    rejects = pl.read_parquet(work / "reports/rejects.parquet")
    assert set(rejects["path"]) == set(expected) - {n for n, (_, e) in expected.items() if e == "ok"}
    assert rejects["reason"].str.len_chars().min() > 5
    released = pl.concat([pl.read_parquet(p, columns=["image_id"]) for p in (work / "release/data").glob("*.parquet")])
    ingested = pl.read_parquet(work / "work/ingest/*.parquet", columns=["image_id", "source_path"])
    assert set(ingested["source_path"]) == good
    # the CMYK astronaut and the palette rocket are the same photos as astronaut.jpg and rocket.jpg in
    # other encodings: dedup keeps one of each pair, and says why it left the other out
    split = pl.read_parquet(work / "work/split/*.parquet").join(ingested, on="image_id")
    left_out = split.filter(pl.col("split").is_null())
    pairs = [{"odd/cmyk.jpg", "astronaut.jpg"}, {"odd/palette_alpha.png", "rocket.jpg"}]
    assert len(left_out) == 2 and all(len(pair & set(left_out["source_path"])) == 1 for pair in pairs)
    assert all(r.startswith("near-duplicate of ") for r in left_out["reason"])
    assert set(released["image_id"]) == set(split.filter(pl.col("split").is_not_null())["image_id"])


def test_cli_reports_a_bad_source_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "groundcap", "run", "--source", str(tmp_path / "nope"), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "neither a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_help_on_every_command():
    from typer.testing import CliRunner

    from groundcap.cli.app import app
    from groundcap.pipeline.order import NAMES

    runner = CliRunner()
    for command in (*NAMES, "run", "dvc-yaml", "backends", "diff", "publish"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "--help" in result.output, command


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="dvc needs git")
def test_dvc_repro_builds_then_is_up_to_date(tmp_path):
    """The real DVC pipeline in a scratch git repo, on three sample photos to keep it quick."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "src" / "groundcap", repo / "src" / "groundcap",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "audits", repo / "audits")
    photos = repo / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
    p = (REPO / "params.yaml").read_text().replace('source: "sample:"', 'source: "photos"')
    (repo / "params.yaml").write_text(p)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}

    def sh(*cmd):
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    sh(sys.executable, "-m", "dvc", "repro")
    assert (repo / "release/README.md").is_file() and (repo / "dvc.lock").is_file()
    # the cache links the outputs (.dvc/config): an image's bytes are not copied into .dvc/cache
    assert all(p.stat().st_nlink == 2 for p in (repo / "work" / "ingest").iterdir())
    assert verify_manifest(repo / "release") == []
    assert "up to date" in sh(sys.executable, "-m", "dvc", "repro")

    # narrowed deps: a new version, a card edit and a QA threshold rerun what reads them, never a model stage
    models_done = {p: p.stat().st_mtime_ns for stage in ("tag", "segment", "caption_regions", "caption_scene",
                                                          "crosscheck") for p in (repo / "work" / stage).iterdir()}
    text = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(text.replace("version: 0.1.0", "version: 0.2.0"))
    card = repo / "src" / "groundcap" / "dataset_card" / "card.py"
    card.write_text(card.read_text() + "\n# an edit\n")
    assert set(json.loads(sh(sys.executable, "-m", "dvc", "status", "--json"))) == {"build", "card"}
    (repo / "params.yaml").write_text(text.replace("version: 0.1.0", "version: 0.2.0")
                                      .replace("min_regions: 1", "min_regions: 2"))
    assert set(json.loads(sh(sys.executable, "-m", "dvc", "status", "--json"))) == {"qa", "build", "card"}
    sh(sys.executable, "-m", "dvc", "repro")
    assert {p: p.stat().st_mtime_ns for p in models_done} == models_done


def test_a_grown_dataset_keeps_every_published_image_in_its_split(release, tmp_path):
    """Version 0.2.0 adds images to the sample: every image of 0.1.0 keeps its split, the card says what changed."""
    source = tmp_path / "images"
    source.mkdir()
    for path in [*sample.paths(), *(sample.data_dir() / name for name in ("brick.png", "color.png", "horse.png",
                                                                           "motorcycle_left.png"))]:
        shutil.copy(path, source / path.name)
    p = params.defaults() | {"source": str(source)}
    p["release"].update(version="0.2.0", previous=str(release))
    run_all(Context(root=tmp_path / "v2", params=p, progress=False))
    grown = tmp_path / "v2" / "release"
    old, new = diff.index(str(release)), diff.index(str(grown))
    assert len(new) > len(old) and all(new[i].split == e.split for i, e in old.items() if i in new)
    changes = diff.compare(old, new)
    assert not changes.moved and changes.counts()["added"] == len(new.keys() - old.keys()) > 0
    assert json.loads((grown / "changelog.json").read_text())[-1]["previous"] == "0.1.0"
    out = subprocess.run([sys.executable, "-m", "groundcap", "diff", str(release), str(grown)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"{changes.counts()['added']} added, ") and "0 moved" in out
