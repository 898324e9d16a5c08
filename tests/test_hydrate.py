"""Reference releases (``release.images: reference``): no image byte released, and ``groundcap hydrate``
rebuilding from a folder of photos the very files an embedded build writes, or naming what it cannot."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from groundcap import ingest, privacy
from groundcap.cli.app import app
from groundcap.errors import ReleaseError
from groundcap.export import fiftyone
from groundcap.params import load as load_params
from groundcap.releases.regions import load_regions
from test_builders import _image, _region, build

CELLS = load_params()["redact"]["cells"]


def _photos(folder) -> dict[str, bytes]:
    """A folder source: a JPEG, a PNG, and an RGBA PNG that ingest re-encodes (normalization is replayed)."""
    rgba = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 56, 4), dtype=np.uint8)).save(rgba, "PNG")
    files = {"a.jpg": _image(64, 48, "JPEG", 1), "sub/b.png": _image(48, 40, "PNG", 2), "c.png": rgba.getvalue()}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def _records(files: dict[str, bytes]) -> dict[str, list[dict]]:
    """What the build would release of the photos: ingest's bytes, the first one blurred in a box."""
    limits = ingest.Limits.from_params(load_params()["ingest"])
    records = []
    for i, (name, data) in enumerate(files.items()):
        got = ingest.validate(data, limits)
        width, height = got["width"], got["height"]
        mask = np.zeros((height, width), dtype=bool)
        mask[4:20, 6:30] = True
        released, fmt, redactions = got["bytes"], got["format"], []
        if i == 0:
            box = (2, 3, 20, 16)
            released, fmt = privacy.blurred_png(ingest.decode_rgb(got["bytes"]), [box], CELLS), "PNG"
            redactions = [{"label": "face", "score": 0.8123456789, "bbox": [float(v) for v in box], "detector": "haar"}]
        records.append({"image_id": ingest.image_id(got["bytes"]), "image": {"bytes": released, "path": None},
                        "format": fmt, "width": width, "height": height, "regions": [_region(1, mask, "dog")],
                        "scene_caption": "<r1>a dog</r1>", "qa_score": 0.6234567891, "redactions": redactions,
                        "source_path": name})
    return {"train": records[:2], "validation": records[2:]}


def _params(folder, images: str) -> dict:
    params = load_params()
    params["source"] = str(folder)
    params["build"]["formats"] = ["webdataset", "coco"]
    params["release"]["images"] = images
    return params


def _section(card: str, heading: str) -> str:
    """A card's section: from its heading to the next."""
    return card.split(heading + "\n", 1)[1].split("\n## ", 1)[0]


def _files(release) -> dict[str, bytes]:
    return {p.relative_to(release).as_posix(): p.read_bytes() for p in sorted(release.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hydrate")
    folder = tmp / "photos"
    records = _records(_photos(folder))
    embedded = build(tmp / "embedded", _params(folder, "embed"), copy.deepcopy(records))
    reference = build(tmp / "reference", _params(folder, "reference"), copy.deepcopy(records))
    return folder, records, embedded, reference


def test_a_reference_release_holds_no_image_byte_and_loads_with_datasets(releases, tmp_path):
    from datasets import load_dataset

    folder, records, _, reference = releases
    files = _files(reference)
    released = [r["image"]["bytes"] for rs in records.values() for r in rs]
    assert not [path for path, data in files.items() for image in released if image in data]
    assert not any(path.startswith("wds/") for path in files)  # the tars are hydrate's to write
    assert "groundcap hydrate" in files["README.md"].decode()
    ds = load_dataset(str(reference), cache_dir=str(tmp_path))
    row = ds["train"][0]
    assert "image" not in row and row["origin"]["kind"] == "files" and row["origin"]["path"] == "a.jpg"
    assert row["origin"]["size"] == len(released[0]) and len(row["origin"]["sha256"]) == 64
    assert ds["validation"][0]["origin"]["path"] == "c.png"
    with pytest.raises(ReleaseError, match="groundcap hydrate"):  # readers that need pixels say so
        load_regions(str(reference), "train", cache_dir=str(tmp_path))
    with pytest.raises(ReleaseError, match="groundcap hydrate"):
        fiftyone.shards(reference)
    published = CliRunner().invoke(app, ["publish", "--to", str(tmp_path / "pub"), "--version", "0.1.0",
                                         "--release", str(reference)])
    assert published.exit_code == 0, published.output


def test_hydrate_rebuilds_the_embedded_files_byte_for_byte(releases, tmp_path):
    from datasets import load_dataset

    from groundcap.dataset_card import validate_card

    folder, _, embedded, reference = releases
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["hydrate", str(reference), "--source", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    got, want = _files(out), _files(embedded)
    image_bearing = [p for p in want if p.split("/")[0] in ("data", "regions", "wds", "coco")]
    assert len(image_bearing) > 10 and {p: got.get(p) for p in image_bearing} == {p: want[p] for p in image_bearing}
    assert "data/hydrate.json" not in got and validate_card(out / "README.md") == []
    card = got["README.md"].decode()
    assert "groundcap hydrate" not in card and "image bytes embedded" in card  # it says it holds them now
    for section in ("## Files", "## Usage"):  # the tars listed and how to read them, as the embedded build's card
        assert _section(card, section) == _section(want["README.md"].decode(), section)
    assert "wds/{split}-NNNNN.tar" in _section(card, "## Files")
    assert "wds/{split}-NNNNN.tar" not in _section(_files(reference)["README.md"].decode(), "## Files")
    doc, embedded_doc = (json.loads(files["croissant.json"]) for files in (got, want))
    assert doc["distribution"] == embedded_doc["distribution"]
    assert "webdataset-tars" in {d["@id"] for d in doc["distribution"]}
    row = load_dataset(str(out), cache_dir=str(tmp_path / "hf"))["train"][0]
    assert row["image"].size == (64, 48) and row["redactions"][0]["detector"] == "haar"


def test_hydrate_names_a_changed_and_a_missing_image_and_writes_nothing(releases, tmp_path):
    import shutil

    folder, _, _, reference = releases
    mine = shutil.copytree(folder, tmp_path / "mine")
    (mine / "sub" / "b.png").write_bytes(_image(48, 40, "PNG", 99))  # other pixels, same name
    (mine / "c.png").unlink()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["hydrate", str(reference), "--source", str(mine), "--out", str(out)])
    assert result.exit_code != 0
    assert "2 of 3 images" in result.output
    assert "sub/b.png: changed" in result.output and "c.png: missing" in result.output
    assert not [p for p in out.rglob("*") if p.is_file()]
