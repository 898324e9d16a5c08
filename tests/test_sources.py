"""Source kinds one by one (no pipeline run): what each yields, its licences and given masks, and how
bad members become recorded rejections."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

import source_fixtures as fx
from groundcap import ingest, licenses, masks, params
from groundcap.annotators.base import Mask
from groundcap.annotators.entities import nest_given, resolve_entities
from groundcap.errors import SourceError
from groundcap.pipeline.stage import Context
from groundcap.sources import iter_source
from groundcap.stages import ingest as ingest_stage

H, W = fx.SIZE


def _ingest(tmp_path: Path, source: str) -> tuple[pl.DataFrame, dict[str, str]]:
    p = params.defaults() | {"source": source}
    p["release"] = {**p["release"], "images": "reference"}  # SA-1B's terms keep its images out of an embedded release
    ingest_stage.STAGE.run(Context(root=tmp_path / "run", params=p, progress=False))
    images = pl.read_parquet(tmp_path / "run/work/ingest/*.parquet")
    rejects = pl.read_parquet(tmp_path / "run/reports/rejects.parquet")
    return images, dict(zip(rejects["path"], rejects["reason"], strict=True))


def test_webdataset_shards_yield_image_members_keyed_by_shard_and_member(tmp_path):
    source = fx.write_webdataset(tmp_path / "wds")
    names = [f.name for f in iter_source(source)]
    assert names == ["train-00000.tar/000000.jpg", "train-00000.tar/000001.jpg", "train-00001.tar/010000.jpg",
                     "train-00001.tar/010001.jpg", "train-00001.tar/broken.png"]  # no .txt members
    images, rejects = _ingest(tmp_path, source)
    assert images["source_path"].to_list() == names[:4]
    assert images["given"].to_list() == [None] * 4 and images["license"].to_list() == [None] * 4
    assert set(rejects) == {"train-00001.tar/broken.png"} and "not an image" in rejects["train-00001.tar/broken.png"]


def test_webdataset_member_read_is_capped_and_random_access(tmp_path):
    source = fx.write_webdataset(tmp_path / "wds")
    items = list(iter_source(source))
    second, first = items[1].read(10**9), items[0].read(10**9)  # any order, after the walk ended
    assert Image.open(io.BytesIO(first)).size == (W, H) and Image.open(io.BytesIO(second)).size == (W, H)
    assert items[0].read(100) == first[:100]


def test_missing_and_compressed_shards_are_rejections_not_crashes(tmp_path):
    fx.write_webdataset(tmp_path / "wds")
    shard = tmp_path / "wds/train-00000.tar"
    (tmp_path / "wds/train-00002.tar.gz").write_bytes(gzip.compress(shard.read_bytes()))
    shutil.copy(shard, tmp_path / "wds/train-00000.tar.gz")  # a plain tar despite its name: read as one
    images, rejects = _ingest(tmp_path, f"wds:{tmp_path}/wds/train-{{00000,00002}}.tar.gz")
    assert images.height == 2
    (reason,) = [r for p, r in rejects.items() if p.endswith("train-00002.tar.gz")]
    assert "not a plain (uncompressed) tar" in reason
    _, rejects = _ingest(tmp_path / "again", f"wds:{tmp_path}/wds/train-{{00000,00009}}.tar")
    (reason,) = [r for p, r in rejects.items() if p.endswith("train-00009.tar")]
    assert "FileNotFoundError" in reason


def test_hf_folder_streams_rows_with_their_licence_column(tmp_path):
    source = fx.write_hf_folder(tmp_path / "hf")
    items = list(iter_source(source))
    assert [f.name for f in items] == [f"{tmp_path}/hf/train/{i}" for i in range(3)]
    assert [f.license for f in items] == ["CC-BY-4.0", "CC-BY-4.0", "CC0-1.0"]  # the SPDX ids
    assert {f.license for f in iter_source(source.replace("&license=licence", ""))} == {"CC-BY-SA-4.0"}  # the card's
    assert Image.open(io.BytesIO(items[2].read(10**9))).size == (W, H)


def test_hf_folder_names_a_missing_column_and_an_unknown_option(tmp_path):
    source = fx.write_hf_folder(tmp_path / "hf")
    with pytest.raises(SourceError, match="no image column 'image'; columns: picture, licence, caption"):
        list(iter_source(source.split("?")[0]))
    with pytest.raises(SourceError, match="unknown option 'colum'"):
        list(iter_source(source + "&colum=x"))


def test_sa1b_folder_gives_masks_and_rejects_an_image_without_its_json(tmp_path):
    source, given = fx.write_sa1b(tmp_path / "sa")
    (tmp_path / "sa/sa_7.json").write_text("{}")  # annotations without their image
    images, rejects = _ingest(tmp_path, source)
    assert images["source_path"].to_list() == ["sa_1.jpg", "sa_2.jpg", "sa_3.jpg"]
    for row in images.iter_rows(named=True):
        assert [g["segmentation"] for g in row["given"]] == given[row["source_path"]]
        assert {g["source"] for g in row["given"]} == {"sa1b"} and row["given"][0]["predicted_iou"] == 0.95
    assert "no sa_9.json beside the image" in rejects["sa_9.jpg"]
    assert "annotation without its image" in rejects["sa_7.json"]
    assert set(images["license"]) == {licenses.SA1B}


@pytest.mark.parametrize("json_first", [False, True])
def test_sa1b_tar_set_pairs_members_in_either_order(tmp_path, json_first):
    _, given = fx.write_sa1b(tmp_path / "sa")
    items = list(iter_source(fx.write_sa1b_tars(tmp_path / "sa", tmp_path / "tars", json_first)))
    assert [f.name for f in items] == ["sa_000000.tar/sa_1.jpg", "sa_000000.tar/sa_2.jpg", "sa_000001.tar/sa_3.jpg",
                                       "sa_000001.tar/sa_9.jpg"]
    assert [m["segmentation"] for m in items[2].given()] == given["sa_3.jpg"]
    with pytest.raises(ValueError, match="no sa_9.json"):
        items[3].given()


def test_sa1b_tar_with_a_member_twice_rejects_the_second(tmp_path):
    fx.write_sa1b(tmp_path / "sa")
    with tarfile.open(tmp_path / "dup.tar", "w") as tar:
        for name in ("sa_1.jpg", "sa_1.jpg", "sa_1.json"):
            tar.add(tmp_path / "sa" / name, arcname=name)
    items = list(iter_source(f"sa1b:{tmp_path}/dup.tar"))
    assert [f.name for f in items] == ["dup.tar/sa_1.jpg", "dup.tar/sa_1.jpg"]
    assert "a second member of this path" in items[0].refused
    assert len(items[1].given()) == 2


def test_sa1b_json_without_its_keys_is_a_clear_rejection(tmp_path):
    source, _ = fx.write_sa1b(tmp_path / "sa")
    (tmp_path / "sa/sa_2.json").write_text(json.dumps({"annotations": []}))
    _, rejects = _ingest(tmp_path, source)
    assert "bad given annotations" in rejects["sa_2.jpg"] and "not SA-1B annotation JSON" in rejects["sa_2.jpg"]


def test_coco_gives_polygon_and_rle_masks_with_category_names_and_licences(tmp_path):
    source, given = fx.write_coco(tmp_path / "coco")
    images, rejects = _ingest(tmp_path, source)
    assert not rejects
    assert images["license"].to_list() == ["CC-BY-2.0", "CC-BY-2.0", "Public Domain"]  # the link read as its SPDX id
    for row in images.iter_rows(named=True):
        assert [g["segmentation"] for g in row["given"]] == given[row["source_path"]]  # the crowd RLE compressed too
        assert [g["label"] for g in row["given"]] == ["cat", "box"]
    left, block = fx.boxes_masks()
    poly, crowd = (masks.decode(g["segmentation"]) for g in images["given"][2])
    assert np.array_equal(crowd, block) and (poly ^ left).sum() <= H  # the polygon rasterizes to the left third


def test_coco_bad_annotations_reject_their_image_only(tmp_path):
    source, _ = fx.write_coco(tmp_path / "coco")
    doc = json.loads((tmp_path / "coco/instances.json").read_text())
    doc["annotations"][0]["category_id"] = 99
    doc["annotations"][3]["segmentation"] = {"size": [10, 10], "counts": "PP"}
    doc["images"].append({"id": 4, "file_name": "missing.jpg", "width": W, "height": H})
    (tmp_path / "coco/instances.json").write_text(json.dumps(doc))
    images, rejects = _ingest(tmp_path, source)
    assert images["source_path"].to_list() == ["000000000003.jpg"]
    assert "unknown category 99" in rejects["000000000001.jpg"]
    assert "RLE of size [10, 10] for a 96x128 image" in rejects["000000000002.jpg"]
    assert rejects["missing.jpg"] == "no such file"  # checked when listed, as a list's entries are


def test_coco_source_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(SourceError, match="cannot read the COCO annotation file"):
        list(iter_source(f"coco:{tmp_path}/nope.json"))
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(SourceError, match="not a COCO annotation file"):
        list(iter_source(f"coco:{tmp_path}/x.json"))


def test_given_masks_on_an_exif_rotated_image_are_refused():
    record = {"width": W, "height": H, "normalized": ["exif_transpose"]}
    given = [{"segmentation": masks.encode(fx.boxes_masks()[0])}]
    with pytest.raises(ingest.Rejected, match="EXIF-rotated"):
        ingest.check_given(given, record)
    assert ingest.check_given(given, {**record, "normalized": []}) == given
    with pytest.raises(ingest.Rejected, match=r"given mask of size \[96, 128\]"):
        ingest.check_given(given, {**record, "width": H, "height": W, "normalized": []})


def test_from_segmentation_keeps_compressed_rle_and_compresses_the_rest():
    left = fx.boxes_masks()[0]
    compressed = fx.rle(left)
    assert masks.from_segmentation(compressed, H, W) == compressed
    runs = masks.run_lengths(compressed).tolist()
    assert masks.from_segmentation({"size": [H, W], "counts": runs}, H, W) == compressed
    with pytest.raises(ValueError, match="at least 3 points"):
        masks.from_segmentation([[0, 0, 5, 5]], H, W)


def _given(mask: np.ndarray, label: str = "thing") -> Mask:
    return Mask(masks.encode(mask), label, 1.0, "given:coco")


def test_given_masks_win_and_segmenters_only_add_outside_them():
    left, block = fx.boxes_masks()
    wide = np.zeros(fx.SIZE, bool)
    wide[H // 3:, W // 4:] = True  # a segmenter mask overlapping both given masks
    free = np.zeros(fx.SIZE, bool)
    free[: H // 3, W // 2:] = True  # and one outside them
    options = dict(min_area_frac=0.005, nms_iou=0.7, max_regions=24)
    generated = [Mask(masks.encode(wide), "", 0.5, "felz"), Mask(masks.encode(free), "", 0.5, "felz")]
    regions = resolve_entities([], generated, H, W, given=[_given(block), _given(left)], **options)
    assert [r["source"] for r in regions[:2]] == ["given:coco", "given:coco"]
    assert [r["segmentation"] for r in regions[:2]] == [fx.rle(left), fx.rle(block)]  # by area, unchanged
    taken = left | block
    for r in regions[2:]:
        assert not (masks.decode(r["segmentation"]) & taken).any()
    assert [r["source"] for r in regions[2:]] == ["felz", "felz"]  # both added, clipped to what is free


def test_nested_given_masks_become_parts_of_their_entity():
    left = fx.boxes_masks()[0]
    inner = np.zeros(fx.SIZE, bool)
    inner[10:40, 5:30] = True
    nested = nest_given([_given(left, "cat"), _given(inner, "ear")], 0.8)
    assert [m.granularity for m in nested] == ["object", "part"]
    regions = resolve_entities([], [], H, W, given=nested, min_area_frac=0.005, nms_iou=0.7, max_regions=24,
                               max_parts=4, part_min_containment=0.8)
    assert [(r["label"], r["granularity"], r["parent_id"]) for r in regions] == [("cat", "object", None),
                                                                                ("ear", "part", 0)]
    assert regions[1]["segmentation"] == fx.rle(inner)


# --- the README's source table: every example runs ------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
HUB_KIND = "Hugging Face dataset (Hub)"


def _readme_examples() -> dict[str, str]:
    table = (REPO / "README.md").read_text().split("<!-- sources-table -->")[1].split("<!-- /sources-table -->")[0]
    rows = [line.split("|")[1:3] for line in table.strip().splitlines()[2:]]
    return {kind.strip(): example.strip().strip("`") for kind, example in rows}


def _photos(root: Path) -> None:
    (root / "photos").mkdir()
    (root / "photos/cat.jpg").write_bytes(fx.jpeg(fx.photos()[0]))
    (root / "photos.txt").write_text("# one path per line\nphotos/cat.jpg\n")


BUILDERS = {  # the files each README example reads, made under the working folder
    "folder": _photos,
    "list file": _photos,
    "bundled sample": lambda root: None,
    "WebDataset": lambda root: fx.write_webdataset(root / "shards"),
    "Hugging Face dataset (local)": lambda root: fx.write_hf_folder(root / "my_dataset"),
    "SA-1B folder": lambda root: fx.write_sa1b(root / "sa1b"),
    "SA-1B tars": lambda root: (fx.write_sa1b(root / "sa1b"), fx.write_sa1b_tars(root / "sa1b", root / "sa1b_tars")),
    "COCO": lambda root: fx.write_coco(root / "coco"),
}
ANNOTATED = {"SA-1B folder", "SA-1B tars", "COCO"}


def test_readme_source_table_has_a_test_per_row():
    assert set(_readme_examples()) == {*BUILDERS, HUB_KIND}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_readme_source_examples(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    BUILDERS[kind](tmp_path)
    items = list(iter_source(_readme_examples()[kind]))
    images = [Image.open(io.BytesIO(f.read(10**9))) for f in items if not f.name.endswith(("broken.png", ".json"))]
    assert images and all(min(img.size) >= 32 for img in images)
    if kind in ANNOTATED:
        given = [f.given() for f in items if f.given and not f.name.endswith("sa_9.jpg")]  # sa_9 has no JSON
        assert given and all(m["segmentation"]["size"] == [H, W] for found in given for m in found)


@pytest.mark.slow
def test_readme_hub_example_streams_from_the_loopback_hub(tmp_path):
    """The Hub example against the fake Hub (tests/fakehub.py), in a subprocess pointed at it."""
    import os
    import subprocess
    import sys

    from fakehub import GITATTRIBUTES, FakeHub, Repo

    example = _readme_examples()[HUB_KIND]
    fx.write_hf_folder(tmp_path / "ds", image_column="image")
    files = {".gitattributes": GITATTRIBUTES} | {p.relative_to(tmp_path / "ds").as_posix(): p.read_bytes()
                                                 for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    code = ("import sys\nfrom groundcap.sources import SourcePolicy, iter_source\n"  # the policy must name hf
            "policy = SourcePolicy(protocols=('file', 'http', 'https', 'hf'))\n"
            "for f in iter_source(sys.argv[1], policy): print(f.name, f.license, len(f.read(10**9)))")
    with FakeHub("hf_test_token") as hub:
        hub.repos["ORG/NAME"] = Repo(visibility="public")
        hub.repos["ORG/NAME"].commit(files, "the dataset")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env |= dict(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf"),
                    HF_HUB_DISABLE_TELEMETRY="1", HF_TOKEN="hf_test_token", HF_HUB_DISABLE_PROGRESS_BARS="1")
        proc = subprocess.run([sys.executable, "-c", code, example], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        downloads = [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert [name for name, *_ in lines] == [f"hf://datasets/ORG/NAME/train/{i}" for i in range(3)]
    assert all(int(size) > 1000 for *_, size in lines)
    assert {licence for _, licence, _ in lines} == {"CC-BY-SA-4.0"}  # no licence column named: the card's
    assert {r.path.rsplit("/", 1)[1] for r in downloads} == {"README.md", "train-00000-of-00001.parquet"}
