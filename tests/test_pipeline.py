"""End to end: the sample through every stage, the release read back with each consumer's own library."""

from __future__ import annotations

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

from conftest import awkward_files, opt_in_formats, small_params
from groundcap import masks, params
from groundcap.builders import features, verify_manifest
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context
from groundcap.releases import diff
from groundcap.sources import sample

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")


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


@pytest.fixture(scope="module")
def opt_in(release, tmp_path_factory) -> Path:
    return opt_in_formats(release.parent, tmp_path_factory.mktemp("opt_in"))


def test_coco_json_has_one_annotation_per_region(release, opt_in, tmp_path):
    images = _load(release, "default", tmp_path)
    for split in SPLITS:
        coco = COCO(str(opt_in / "coco" / f"{split}.json"))
        assert len(coco.getAnnIds()) == sum(len(r["regions"]) for r in images[split])
        ann = coco.loadAnns(coco.getAnnIds()[:1])[0]
        assert coco.annToMask(ann).sum() == ann["area"]


def test_each_image_is_stored_once(release):
    """Every file of the demo release together weighs at most 1.15x the distinct images it holds: their
    bytes are in data/ only (regions/ is annotations, the WebDataset tars are opt-in)."""
    import pyarrow.parquet as pq

    images = {}
    for shard in (release / "data").glob("*.parquet"):
        table = pq.read_table(shard, columns=["image_id", "image"])
        sizes = [len(image["bytes"]) for image in table["image"].to_pylist()]
        images.update(zip(table["image_id"].to_pylist(), sizes, strict=True))
    total = sum(p.stat().st_size for p in release.rglob("*") if p.is_file())
    assert len(images) >= 10 and total <= 1.15 * sum(images.values()), (total, sum(images.values()))
    assert not [*(release / "wds").iterdir(), *(release / "coco").iterdir()]  # opt-in


def test_webdataset_tars_hold_the_parquet_images_and_regions(release, opt_in, tmp_path):
    images = _load(release, "default", tmp_path)
    for split in SPLITS:
        tars = sorted(str(p) for p in (opt_in / "wds").glob(f"{split}-*.tar"))
        seen = {}
        for wds_sample in wds.WebDataset(tars, shardshuffle=False, empty_check=False):
            meta = json.loads(wds_sample["json"])
            seen[meta["image_id"]] = (wds_sample.get("jpg") or wds_sample.get("png"), meta["regions"])
        parquet = {r["image_id"]: r for r in images[split]}
        assert set(seen) == set(parquet)
        data = {r["image_id"]: r["image"]["bytes"] for r in _parquet_rows(release, split)}
        for image_id, (image_bytes, regions) in seen.items():
            assert image_bytes == data[image_id]
            assert [r["segmentation"]["counts"] for r in regions] == [
                r["segmentation"]["counts"] for r in parquet[image_id]["regions"]
            ]


def _parquet_rows(release: Path, split: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for shard in sorted((release / "data").glob(f"{split}-*.parquet"))
            for row in pq.read_table(shard, columns=["image_id", "image"]).to_pylist()]


def test_card_and_manifest(release):
    card = (release / "README.md").read_text()
    assert card.startswith("---\n") and "dataset_info" in card and "configs" in card
    assert str(release.parent) not in card and "/tmp" not in card
    assert verify_manifest(release) == []


def test_same_input_gives_byte_identical_release(small_project, tmp_path):
    """A second run from scratch, in another folder, writes the same bytes (four photos in two parts: conftest)."""
    release = small_project / "release"
    run_all(Context(root=tmp_path / "again", params=small_params(small_project), progress=False))
    again = tmp_path / "again" / "release"
    first = sorted(p.relative_to(release) for p in release.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        assert (release / rel).read_bytes() == (again / rel).read_bytes(), rel


@pytest.mark.slow
def test_cli_run_on_photos_mixed_with_broken_files(awkward_dir, tmp_path):
    """``groundcap run`` in this process (the models this worker loaded already serve it; `python -m groundcap
    run` as its own process is the SIGKILL test's, in test_executors.py)."""
    from typer.testing import CliRunner

    from groundcap.cli.app import app

    for name in ("astronaut", "coffee", "rocket"):  # ordinary photos beside the awkward files
        Image.fromarray(getattr(skimage.data, name)()).save(awkward_dir / f"{name}.jpg", quality=92)
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["run", "--source", str(awkward_dir), "--workdir", str(work), "--quiet"])
    assert result.exit_code == 0, result.output
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
    """The real DVC pipeline in a scratch git repo, on two sample photos to keep it quick."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "src" / "groundcap", repo / "src" / "groundcap",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "audits", repo / "audits")
    photos = repo / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
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


def test_a_grown_dataset_keeps_every_published_image_in_its_split(small_project, tmp_path):
    """Version 0.2.0 adds images to the project of 0.1.0: every image of 0.1.0 keeps its split, the card says
    what changed. The new photos sort after the old ones, so the old parts are the same and only the new
    part is computed (resume)."""
    release, source, project = small_project / "release", tmp_path / "images", tmp_path / "v2"
    shutil.copytree(small_project / "photos", source)
    for name in ("horse.png", "motorcycle_left.png"):
        shutil.copy(sample.data_dir() / name, source / name)
    for folder in ("work", "reports"):
        shutil.copytree(small_project / folder, project / folder)
    p = small_params(small_project) | {"source": str(source)}
    p["release"] = {**p["release"], "version": "0.2.0", "previous": str(release)}
    run_all(Context(root=project, params=p, progress=False))
    grown = project / "release"
    old, new = diff.index(str(release)), diff.index(str(grown))
    assert len(new) > len(old) and all(new[i].split == e.split for i, e in old.items() if i in new)
    changes = diff.compare(old, new)
    assert not changes.moved and changes.counts()["added"] == len(new.keys() - old.keys()) > 0
    assert json.loads((grown / "changelog.json").read_text())[-1]["previous"] == "0.1.0"
    out = subprocess.run([sys.executable, "-m", "groundcap", "diff", str(release), str(grown)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"{changes.counts()['added']} added, ") and "0 moved" in out
