"""The card's plots: fixed-bin counts read back from a tiny release, and reproducible PNG bytes."""

from __future__ import annotations

import copy
import hashlib
import io
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from groundcap import grounding, masks
from groundcap.builders import ReleaseWriter
from groundcap.dataset_card.plots import DPI, FIGSIZE, PLOT_FILES, histograms, write_plots
from groundcap.params import load as load_params
from groundcap.splits import ALL_SPLITS

PARAMS = load_params()
PARAMS["build"].update(shard_bytes=1, wds_shard_bytes=1, row_group_rows=2)  # several shards per split
W, H = 16, 12


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _region(region_id: int, short: str, detailed: str) -> dict:
    mask = np.zeros((H, W), dtype=bool)
    mask[region_id % H, : 1 + region_id % W] = True
    rle = masks.encode(mask)
    return {
        "region_id": region_id,
        "bbox": masks.bbox(rle),
        "area": masks.area(rle),
        "segmentation": rle,
        "label": "thing",
        "granularity": "object",
        "parent_id": None,
        "source": "synthetic",
        "short_caption": short,
        "detailed_caption": detailed,
    }


def _record(seed: int, n_regions: int, scene: str, score: float, detailed_words: int = 6) -> dict:
    data = _png(seed)
    regions = [
        _region(i, " ".join(["red"] * (1 + (i + seed) % 5)), " ".join(["word"] * (detailed_words + i)))
        for i in range(1, n_regions + 1)
    ]
    return {
        "image_id": hashlib.sha256(data).hexdigest()[:16],
        "image": {"bytes": data, "path": None},
        "format": "PNG",
        "width": W,
        "height": H,
        "regions": regions,
        "scene_caption": scene,
        "qa_score": score,
        "redactions": [],
    }


RECORDS = {
    "train": [
        _record(1, 2, "<r1>a red dog</r1> beside <r2>a cat</r2>", 0.7),  # float32 0.7 = 0.69999999: bin 14
        _record(2, 0, "an empty scene", 0.0),
        _record(3, 70, "<r1> big dog </r1> and " + "more " * 400, 1.0),  # regions and words overflow; 1.0: bin 19
        _record(4, 3, "<r3>three</r3> <r2>two</r2> <r1>one</r1>", 0.05, detailed_words=200),
    ],
    "validation": [
        _record(5, 1, "<r1>a lone tree</r1> in a field", 0.33),
        _record(6, 5, "five regions here", 0.95),
    ],
    "test": [],
    "human_test": [],
}


def _build(release_dir, records=RECORDS):
    with ReleaseWriter(release_dir, PARAMS, splits=ALL_SPLITS) as writer:
        for split, rows in records.items():
            for record in rows:
                writer.add(split, copy.deepcopy(record))
    return release_dir


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("plots") / "release")


def _bins(values, width, overflow):
    size = overflow // width + 1
    counts = [0] * size
    for v in values:
        counts[min(v // width, size - 1)] += 1
    return counts


def _expected(rows):
    regions = [r for record in rows for r in record["regions"]]
    qa = [0] * 20
    for record in rows:
        # float32 as stored, then to the 0.05 bin it names (the score rounded to 6 decimals)
        score = round(float(np.float32(record["qa_score"])), 6)
        qa[min(math.floor(score * 20 + 1e-9), 19)] += 1
    return {
        "images": len(rows),
        "regions": len(regions),
        "regions_per_image": _bins([len(record["regions"]) for record in rows], 1, 64),
        "words": {
            "short_caption": _bins([len(r["short_caption"].split()) for r in regions], 1, 32),
            "detailed_caption": _bins([len(r["detailed_caption"].split()) for r in regions], 4, 160),
            "scene_caption": _bins([len(grounding.plain(rec["scene_caption"]).split()) for rec in rows], 8, 320),
        },
        "qa_score": qa,
        "qa_score_missing": 0,
    }


def test_several_shards(release):
    assert len(list((release / "data").glob("train-*.parquet"))) == 2
    assert len(list((release / "data").glob("test-*.parquet"))) == 1  # the zero-row shard


def test_histograms_match_direct_computation(release):
    hist = histograms(release, ALL_SPLITS)
    assert list(hist["splits"]) == ["train", "validation"]  # empty splits left out
    for split in ("train", "validation"):
        assert hist["splits"][split] == _expected(RECORDS[split])
    train = hist["splits"]["train"]
    assert train["regions_per_image"][64] == 1 and sum(train["regions_per_image"]) == 4  # 70 regions: overflow
    assert train["regions_per_image"][:4] == [1, 0, 1, 1]
    assert [i for i, n in enumerate(train["qa_score"]) if n] == [0, 1, 14, 19]  # 0.0, 0.05, 0.7, 1.0
    validation = hist["splits"]["validation"]["qa_score"]
    assert [i for i, n in enumerate(validation) if n] == [6, 19]  # 0.33, 0.95 (the last bin is [0.95, 1.0])
    scene = train["words"]["scene_caption"]
    assert scene[0] == 3 and scene[-1] == 1  # markup stripped: "<r1> big dog </r1>" is 2 words, not 4
    assert train["words"]["detailed_caption"][-1] == 3  # 201..203 words: overflow
    assert hist["bins"]["qa_score"] == {"width": 0.05, "bins": 20}


def _pngs(release_dir):
    return {name: (release_dir / "plots" / name).read_bytes() for name in PLOT_FILES}


@pytest.mark.slow
def test_write_plots(release, tmp_path):
    stale = release / "plots"
    stale.mkdir(exist_ok=True)
    (stale / "old_plot.png").write_bytes(b"stale")
    (stale / ".qa_scores.png.tmp").write_bytes(b"crashed")
    (stale / "notes.txt").write_text("not a plot")

    paths = write_plots(release, ALL_SPLITS)
    assert paths == ["plots/regions_per_image.png", "plots/caption_words.png", "plots/qa_scores.png"]
    assert sorted(p.name for p in stale.iterdir()) == sorted([*PLOT_FILES, "notes.txt"])
    for path in paths:
        with Image.open(release / path) as image:
            image.load()
            name = path.rsplit("/", 1)[1]
            assert image.format == "PNG"
            assert image.size == (round(FIGSIZE[name][0] * DPI), round(FIGSIZE[name][1] * DPI))
            assert "Software" not in image.info
            assert len(np.unique(np.asarray(image.convert("L")))) > 2  # something was drawn
    first = _pngs(release)

    assert write_plots(release, ALL_SPLITS) == paths
    assert _pngs(release) == first  # same bytes on a second run

    elsewhere = tmp_path / "some" / "other" / "place"
    shutil.copytree(release, elsewhere)
    shutil.rmtree(elsewhere / "plots")
    write_plots(elsewhere, ALL_SPLITS)
    assert _pngs(elsewhere) == first  # and at another path

    write_plots(elsewhere, ("train",))  # a different selection draws something else
    assert _pngs(elsewhere)["qa_scores.png"] != first["qa_scores.png"]


def test_all_splits_empty(tmp_path):
    release = _build(tmp_path / "empty", {split: [] for split in ALL_SPLITS})
    assert histograms(release, ALL_SPLITS)["splits"] == {}
    paths = write_plots(release, ALL_SPLITS)
    assert paths == [f"plots/{name}" for name in PLOT_FILES]
    for path in paths:
        with Image.open(release / path) as image:
            assert image.size[0] > 0
