"""The executor and the registry: one failing image is recorded, not fatal; a new backend is one class."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import skimage.data
from PIL import Image

from groundcap import params
from groundcap.annotators import base, registry
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context
from groundcap.sources import SourceError, iter_source


@registry.register("detector", "test-fails-on-dark", description="raises on dark images (test only)")
class FailsOnDark(base.Detector):
    model = "test"

    def detect(self, image, tags):
        if image.mean() < 60:
            raise RuntimeError("backend exploded on a dark image")
        return [base.Detection("thing", 0.9, (2.0, 2.0, 20.0, 20.0), self.name)]


@pytest.mark.slow  # nine stages on three photos, MiniLM loaded for crosscheck: over 5 s
def test_a_backend_error_on_one_image_is_recorded_and_the_rest_released(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(skimage.data.coffee()).save(src / "bright.png")
    Image.fromarray(np.full((64, 64, 3), 10, np.uint8)).save(src / "dark.png")
    Image.fromarray(skimage.data.chelsea()).save(src / "cat.png")
    p = params.defaults() | {"source": str(src)}
    p["tag"] = {**p["tag"], "detectors": ["test-fails-on-dark"]}
    run_all(Context(root=tmp_path / "run", params=p, progress=False), ["ingest", "tag", "segment", "caption_regions",
                                                                      "caption_scene", "crosscheck", "qa", "dedup",
                                                                      "split"])
    qa = pl.read_parquet(tmp_path / "run/work/qa/*.parquet").join(
        pl.read_parquet(tmp_path / "run/work/ingest/*.parquet", columns=["image_id", "source_path"]), on="image_id"
    )
    dark = qa.filter(pl.col("source_path") == "dark.png").row(0, named=True)
    assert not dark["passed"] and "backend exploded on a dark image" in dark["reasons"][0]
    assert dark["reasons"][0].startswith("tag: ")
    assert qa.filter(pl.col("source_path") != "dark.png")["passed"].all()
    split = pl.read_parquet(tmp_path / "run/work/split/*.parquet")
    assert split.filter(pl.col("image_id") == dark["image_id"])["split"].to_list() == [None]
    segs = pl.read_parquet(tmp_path / "run/work/segment/*.parquet")
    assert segs.filter(pl.col("image_id") == dark["image_id"])["error"].str.starts_with("tag: ").all()


def test_registry_lists_and_refuses_clearly():
    names = {(b.step, b.name) for b in registry.backends()}
    assert {("detector", "haar"), ("detector", "rapidocr"), ("prompted_segmenter", "grabcut"),
            ("mask_generator", "felzenszwalb"), ("region_captioner", "attributes"),
            ("scene_captioner", "geometry"), ("detector", "test-fails-on-dark")} <= names
    with pytest.raises(registry.UnknownBackend, match="registered: .*haar"):
        registry.create("detector", "no-such-detector")
    with pytest.raises(ValueError, match="has no option min_neigbors; its options: .*min_neighbors"):
        registry.create("detector", "haar", {"min_neigbors": 3})
    assert registry.create("mask_generator", "felzenszwalb", {"scale": 100}).scale == 100.0
    with pytest.raises(TypeError, match="must subclass Detector"):
        registry.register("detector", "wrong")(base.Tagger)


def test_list_file_source_resolves_relative_paths_and_records_unreadable_entries(tmp_path):
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "a.png")
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\na.png\n\nmissing.png\n")
    entries = list(iter_source(str(listing)))
    assert [entry.name for entry in entries] == ["a.png", "missing.png"]
    assert entries[0].read(10**9) == (tmp_path / "a.png").read_bytes()
    assert entries[1].refused == "no such file"
    p = params.defaults() | {"source": str(listing)}
    run_all(Context(root=tmp_path / "run", params=p, progress=False), ["ingest"])
    rejects = pl.read_parquet(tmp_path / "run/reports/rejects.parquet")
    assert rejects["path"].to_list() == ["missing.png"] and rejects["reason"][0] == "no such file"
    with pytest.raises(SourceError):
        list(iter_source(str(tmp_path / "nothing-here")))


# `make bench --quick`'s figures in groups of a similar cost, so that test workers share them; with the lines each
# group must print (vlm-batch: measured, or skipped saying why)
BENCH_GROUPS = {
    "pipeline,build,growth": ("pipeline peak RSS growth", "build/tar", "its upload adds"),  # one project for all three
    "sources,dedup-images,uniqueness": ("ingest peak RSS", "near-duplicate images", "uniqueness (held-out"),
    "masks,postprocess,ingest,dedup-index,faces,cli-startup,colour-words,vlm-batch": (
        "dense/RLE", "groundcap/Pillow", "near-duplicate search growth", "vlm-batch"),
}


@pytest.mark.slow
@pytest.mark.parametrize("figures", list(BENCH_GROUPS))
def test_benchmarks_run(tmp_path, figures):
    """`make bench` must not rot: its quick mode runs every figure (the pipeline on 1 photo at 1x and
    2x, each stage a process) and its own checks (RLE IoU against the dense result, planted pairs)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "run.py"
    out = subprocess.run([sys.executable, str(script), "--quick", "--only", figures], check=False,
                         capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr
    for figure in BENCH_GROUPS[figures]:
        assert figure in out.stdout, f"no {figure!r} line in:\n{out.stdout}"


def test_the_bench_groups_cover_every_quick_figure(monkeypatch):
    """Every figure `make bench` runs is in one of the test's groups (scale and parts are opt-in: hours)."""
    import importlib.util
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench))  # run.py imports the figures beside it, as when run as a script
    spec = importlib.util.spec_from_file_location("bench_run", bench / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    grouped = [f for group in BENCH_GROUPS for f in group.split(",")]
    assert sorted(grouped) == sorted(set(run.FIGURES) - run.OPT_IN - {"vlm-served", "vlm-memory"})
