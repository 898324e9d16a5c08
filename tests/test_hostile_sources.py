"""Issue 27: annotation files and datasets nobody vetted. Each finding drives the source readers directly (no
pipeline run): no segfault, no hang, no traceback, no read outside the source, no silent mis-attachment; what
is bad becomes a refusal with its reason, a bad file as a whole one line and exit code 2."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import source_fixtures as fx
from groundcap.sources import SourceError, SourcePolicy, iter_source

POLICY = SourcePolicy(file_timeout_s=5)


def outcomes(source: str, policy: SourcePolicy = POLICY) -> dict[str, str]:
    """What ingest would make of each item, short of decoding: ``masks: N``, or the reason it is rejected."""
    out = {}
    for item in iter_source(source, policy):
        assert item.name not in out, f"two items named {item.name!r}"
        if item.refused:
            out[item.name] = item.refused
            continue
        try:
            item.read(1 << 20)
            out[item.name] = f"masks: {len(item.given())}" if item.given else "read"
        except (OSError, ValueError) as exc:
            out[item.name] = str(exc)
    return out


def _coco(tmp_path: Path, mutate) -> str:
    source, _ = fx.write_coco(tmp_path / "coco")
    path = tmp_path / "coco/instances.json"
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    return source


def test_a_huge_polygon_coordinate_is_a_rejection_not_a_segfault():
    """pycocotools' rasterizer trusts its coordinates: 1e10 crashed the process (run in a child here, so an
    old build's crash fails this test only)."""
    code = ("from groundcap import masks\ntry:\n    masks.from_segmentation([[0, 0, 1e10, 0, 1e10, 1e10]], 10, 10)\n"
            "except ValueError as exc:\n    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-500:]
    assert "refused: polygon coordinates must be finite and within 10x10" in done.stdout


@pytest.mark.parametrize("counts, reason", [
    ("0" + fx.rle(fx.boxes_masks()[1])["counts"], "RLE runs cover"),  # a leading run: no longer h*w pixels
    ("é" + fx.rle(fx.boxes_masks()[1])["counts"], "outside pycocotools' alphabet"),  # failed only in QA before
    ([fx.SIZE[0] * fx.SIZE[1] - 1, 2], "summing to 96x128"),
], ids=["one-run-too-many", "non-ascii", "uncompressed-past-the-end"])
def test_rle_counts_that_do_not_cover_the_image_reject_it_at_ingest(tmp_path, counts, reason):
    """Such counts were accepted and hung ``segment`` later (masks.intersection on runs past the image)."""
    source = _coco(tmp_path, lambda doc: doc["annotations"][1]["segmentation"].update(counts=counts))
    found = outcomes(source)
    assert reason in found["000000000001.jpg"] and found["000000000002.jpg"] == "masks: 2"


def test_a_category_id_given_as_a_list_refuses_the_file_in_one_line(tmp_path):
    source = _coco(tmp_path, lambda doc: doc["categories"].append({"id": [3], "name": "x"}))
    with pytest.raises(SourceError, match=r"categories\[2\]: id \[3\] is not an integer"):
        outcomes(source)


def test_coco_entries_that_are_no_objects_are_reject_rows_and_a_too_deep_file_one_line(tmp_path):
    source = _coco(tmp_path, lambda doc: (doc["images"].append(5), doc["annotations"].append([1])))
    found = outcomes(source)
    assert found["images[3]"] == "an image entry that is not an object"
    assert found["annotations[6]"] == "an annotation that is not an object"
    (tmp_path / "coco/instances.json").write_text('{"images": [' + "[" * 5000 + "]" * 5000 + "]}")
    with pytest.raises(SourceError) as refused:
        outcomes(source)
    assert "\n" not in str(refused.value) and "too deep" in str(refused.value)


def test_duplicate_image_ids_reject_both_images_instead_of_swapping_their_masks(tmp_path):
    source = _coco(tmp_path, lambda doc: doc["images"][1].update(id=1))
    found = outcomes(source)
    assert "image id 1 is given to more than one image" in found["000000000001.jpg"]
    assert "image id 1 is given to more than one image" in found["000000000002.jpg"]
    assert found["000000000003.jpg"] == "masks: 2"
    assert found["annotations[2]"] == found["annotations[3]"] == \
        "annotation of no image: image_id 2 names no image entry"


def test_an_image_id_of_one_point_zero_is_a_reject_row_not_a_silently_dropped_mask(tmp_path):
    source = _coco(tmp_path, lambda doc: doc["annotations"][0].update(image_id=1.0))
    found = outcomes(source)
    assert found["annotations[0]"] == "annotation of no image: image_id 1.0 is not an integer from 0 to 2**63-1"
    assert found["000000000001.jpg"] == "masks: 1"


def test_a_coco_file_name_out_of_the_images_folder_is_never_read(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(fx.jpeg(fx.photos()[0]))
    source = _coco(tmp_path, lambda doc: (doc["images"][0].update(file_name="../../secret.jpg"),
                                          doc["images"][1].update(file_name=str(tmp_path / "secret.jpg")),
                                          doc["images"][2].update(file_name="pipe.jpg")))
    os.mkfifo(tmp_path / "coco/images/pipe.jpg")
    found = outcomes(source)
    assert found["../../secret.jpg"] == "'../../secret.jpg': a path out of the source's folder; never opened"
    assert "a path out of the source's folder" in found[str(tmp_path / "secret.jpg")]
    assert found["pipe.jpg"] == "a FIFO (named pipe), not a regular file; never opened"
    (tmp_path / "coco/images/link.jpg").symlink_to(tmp_path / "secret.jpg")
    source = _coco(tmp_path, lambda doc: doc["images"][0].update(file_name="link.jpg"))
    assert "a link out of the source folder" in outcomes(source)["link.jpg"]


@pytest.mark.timeout(20)
def test_fifos_named_as_annotation_files_or_shards_never_block(tmp_path):
    """A FIFO as the COCO file refuses the source in one line; as a tar shard it is the shard's reject row."""
    for name in ("instances.json", "train.tar", "sa_000000.tar"):
        os.mkfifo(tmp_path / name)
    with pytest.raises(SourceError, match="cannot read the COCO annotation file: a FIFO"):
        iter_source(f"coco:{tmp_path}/instances.json", POLICY)
    assert outcomes(f"wds:{tmp_path}/train.tar") == {
        f"{tmp_path}/train.tar": "a FIFO (named pipe), not a regular file; never opened"}
    assert outcomes(f"sa1b:{tmp_path}/sa_000000.tar") == {
        f"{tmp_path}/sa_000000.tar": "a FIFO (named pipe), not a regular file; never opened"}


def test_an_sa1b_folder_link_out_or_fifo_is_refused(tmp_path):
    source, _ = fx.write_sa1b(tmp_path / "sa")
    (tmp_path / "outside.jpg").write_bytes(fx.jpeg(fx.photos()[0]))
    (tmp_path / "sa/sa_7.jpg").symlink_to(tmp_path / "outside.jpg")
    (tmp_path / "sa/sa_2.json").unlink()
    (tmp_path / "sa/sa_2.json").symlink_to(tmp_path / "sa/sa_1.json")  # a link inside the folder is fine
    os.mkfifo(tmp_path / "sa/sa_8.jpg")
    found = outcomes(source)
    assert "a link out of the source folder" in found["sa_7.jpg"]
    assert found["sa_8.jpg"] == "a FIFO (named pipe), not a regular file; never opened"
    assert found["sa_1.jpg"] == found["sa_2.jpg"] == "masks: 2"


def test_hf_path_cells_are_read_only_inside_the_dataset_folder(tmp_path):
    import pyarrow.parquet as pq
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    root = tmp_path / "ds"
    (root / "data").mkdir(parents=True)
    (tmp_path / "secret.jpg").write_bytes(fx.jpeg(fx.photos()[0]))
    (root / "data/inside.jpg").write_bytes(fx.jpeg(fx.photos()[1]))
    os.mkfifo(root / "data/pipe.jpg")
    cells = ["data/inside.jpg", str(tmp_path / "secret.jpg"), "../secret.jpg", "data/pipe.jpg",
             "http://127.0.0.1:9/x.jpg", "simplecache::http://127.0.0.1:9/x.jpg"]
    ds = Dataset.from_dict({"image": [{"bytes": None, "path": c} for c in cells]}, features=Features({
        "image": ImageFeature()}))
    pq.write_table(ds.data.table, root / "data/train-00000-of-00001.parquet")  # to_parquet would embed the files
    found = outcomes(f"hf:{root}", SourcePolicy(protocols=("file",)))
    reasons = [found[f"{root}/train/{n}"] for n in range(len(cells))]
    assert reasons[0] == "read"
    assert all("a path out of the source's folder" in r for r in reasons[1:3]), reasons
    assert reasons[3] == "a FIFO (named pipe), not a regular file; never opened"
    assert "protocol 'http' is not allowed" in reasons[4] and "protocol 'simplecache' is not allowed" in reasons[5]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["fifo", "outside", "http"])
def test_an_hf_folder_whose_data_files_lead_out_of_it_is_refused_in_one_line(tmp_path, case):
    """``load_dataset`` reads a folder's data files itself: a FIFO among them blocked it, and its card's
    ``configs`` could point it at files outside the folder or at URLs the policy refuses."""
    source = fx.write_hf_folder(tmp_path / "ds")
    if case == "fifo":
        os.mkfifo(tmp_path / "ds/data/train-00001-of-00001.parquet")
    else:
        path = "../elsewhere/*.parquet" if case == "outside" else "http://127.0.0.1:9/x.parquet"
        (tmp_path / "ds/README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n"
                                               f"  - split: train\n    path: {path}\n---\n")
    reason = {"fifo": "data/train-00001-of-00001.parquet: a FIFO", "outside": "a path out of the source's folder",
              "http": "not a path in the folder"}[case]
    with pytest.raises(SourceError, match=reason) as refused:
        iter_source(source, SourcePolicy(protocols=("file",)))
    assert "\n" not in str(refused.value)


def _tar(path: Path, members: list[tuple[str, bytes | str]]) -> None:
    """A tar of regular members (bytes) and symbolic links (str: the link's target)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_wds_link_members_and_repeated_keys_are_reject_rows(tmp_path):
    first, second = (fx.jpeg(a) for a in fx.photos()[:2])
    _tar(tmp_path / "train.tar", [("a.jpg", first), ("a.jpg", second), ("b.jpg", "a.jpg"), ("c.jpg", "/etc/x.jpg"),
                                  ("a.txt", "a.jpg")])
    items = list(iter_source(f"wds:{tmp_path}/train.tar", POLICY))
    assert [(i.name, i.refused) for i in items] == [
        ("train.tar/a.jpg", None),
        ("train.tar/a.jpg", "a second member of this path in the tar; only the first is read"),
        ("train.tar/b.jpg", "a link member (to 'a.jpg'), not a file; never followed"),
        ("train.tar/c.jpg", "a link member (to '/etc/x.jpg'), not a file; never followed")]
    assert items[0].read(1 << 20) == first
    (tmp_path / "b").mkdir()
    _tar(tmp_path / "b/train.tar", [("z.jpg", first)])
    with pytest.raises(SourceError, match="shard file name 'train.tar' given more than once"):
        iter_source(f"wds:{tmp_path}/{{,b/}}train.tar", POLICY)


def test_an_sa1b_json_with_bad_sizes_or_scores_rejects_its_image(tmp_path):
    source, _ = fx.write_sa1b(tmp_path / "sa")
    for n, change in ((1, {"image": {"height": 1e10, "width": 128}}), (2, {"predicted_iou": float("nan")})):
        doc = json.loads((tmp_path / f"sa/sa_{n}.json").read_text())
        if "image" in change:
            doc["image"].update(change["image"])
        else:
            doc["annotations"][0].update(change)
        (tmp_path / f"sa/sa_{n}.json").write_text(json.dumps(doc))
    found = outcomes(source)
    assert found["sa_1.jpg"] == "image height 10000000000.0 is not an integer from 1 to 65535"
    assert found["sa_2.jpg"] == "annotations[0]: predicted_iou nan is not a finite number"


_HOLDER = """
import sys, time
from pathlib import Path
from groundcap.sources import iter_source
from groundcap.storage import writer_lock
with writer_lock.hold(Path(sys.argv[1]), "test"):
    items = iter_source(sys.argv[2])
    next(items)  # the COCO index is built; the generator holds it while the run sleeps
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig, lock_left", [(signal.SIGTERM, False), (signal.SIGKILL, True)])
def test_no_exit_leaves_a_temporary_folder_and_a_terminated_run_releases_its_lock(tmp_path, sig, lock_left):
    """A run stopped while it reads a COCO file: SIGTERM releases the lock (SIGKILL cannot, and the next
    writer takes the stale lock over), and neither leaves the file's index behind in TMPDIR."""
    source, _ = fx.write_coco(tmp_path / "coco")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TMPDIR": str(tmp)}
    with subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run"), source], env=env,
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        assert proc.wait(30) in (-sig, 128 + sig)
    assert (tmp_path / "run/.groundcap.lock").exists() == lock_left
    assert list(tmp.iterdir()) == []


def test_a_bad_annotation_file_exits_2_in_one_line_and_releases_the_lock(tmp_path):
    from groundcap.cli.app import app

    source = _coco(tmp_path, lambda doc: doc["categories"].append({"id": 5.5, "name": "x"}))
    root = tmp_path / "run"
    root.mkdir()
    (root / "params.yaml").write_text(json.dumps({"source": source}))
    start = time.monotonic()
    result = CliRunner().invoke(app, ["ingest", "--root", str(root), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "categories[2]: id 5.5 is not an integer" in lines[0], result.output
    assert not (root / ".groundcap.lock").exists() and time.monotonic() - start < 30
