import hashlib
import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from conftest import awkward_files
from groundcap import ingest, params
from groundcap.pipeline.stage import Context
from groundcap.stages import ingest as ingest_stage
from groundcap.storage import parts

LIMITS = ingest.Limits.from_params(params.defaults()["ingest"])


# Duplicates are a property of the whole source: the stage test covers them.
@pytest.mark.parametrize("name", sorted(n for n, (_, e) in awkward_files().items() if e != "exact duplicate"))
def test_each_awkward_file_is_accepted_or_rejected_with_its_reason(name):
    data, expected = awkward_files()[name]
    if expected == "ok":
        record = ingest.validate(data, LIMITS)
        arr = ingest.decode_rgb(record["bytes"])
        assert arr.dtype == np.uint8 and arr.shape == (record["height"], record["width"], 3)
        assert record["format"] in {"JPEG", "PNG"}
    else:
        with pytest.raises(ingest.Rejected, match=expected):
            ingest.validate(data, LIMITS)


def test_exif_orientation_is_applied():
    data, _ = awkward_files()["odd/exif_rotated.jpg"]
    raw = Image.open(io.BytesIO(data))
    record = ingest.validate(data, LIMITS)
    assert (record["width"], record["height"]) == (raw.height, raw.width)
    assert "exif_transpose" in record["normalized"]


def test_sixteen_bit_is_scaled_not_clipped():
    data, _ = awkward_files()["odd/gray16.png"]
    arr = ingest.decode_rgb(ingest.validate(data, LIMITS)["bytes"])
    import skimage.data

    np.testing.assert_allclose(arr[..., 0].astype(int), skimage.data.camera().astype(int), atol=1)


def test_transparency_is_flattened_on_white():
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    arr = ingest.decode_rgb(ingest.validate(buf.getvalue(), LIMITS)["bytes"])
    assert (arr == 255).all()


def test_upright_rgb_jpeg_keeps_its_original_bytes():
    data, _ = awkward_files()["good/cat.jpg"]
    record = ingest.validate(data, LIMITS)
    assert record["bytes"] == data and record["normalized"] == []


def test_animated_can_be_refused_by_params():
    data, _ = awkward_files()["odd/animated.gif"]
    limits = ingest.Limits(LIMITS.min_side, LIMITS.max_pixels, LIMITS.max_bytes, "reject")
    with pytest.raises(ingest.Rejected, match="animated"):
        ingest.validate(data, limits)
    assert "first_of_3_frames" in ingest.validate(data, LIMITS)["normalized"]


def test_stage_records_every_rejection_and_keeps_every_good_file(awkward_dir, tmp_path):
    p = params.defaults() | {"source": str(awkward_dir), "part_size": 2}
    ingest_stage.STAGE.run(Context(root=tmp_path / "run", params=p, progress=False))
    images = pl.read_parquet(tmp_path / "run/work/ingest/*.parquet")
    rejects = pl.read_parquet(tmp_path / "run/reports/rejects.parquet")
    expected = awkward_files()
    good = {n for n, (_, e) in expected.items() if e == "ok"}
    assert set(images["source_path"]) == good
    reasons = dict(zip(rejects["path"], rejects["reason"], strict=True))
    assert set(reasons) == set(expected) - good
    for name, reason in reasons.items():
        assert expected[name][1] in reason, (name, reason)
    assert images["image_id"].n_unique() == images.height
    assert len(list((tmp_path / "run/work/ingest").glob("part-*.parquet"))) == 3  # 6 images, parts of 2


def test_a_part_closes_at_part_bytes_before_part_size(tmp_path):
    """Parts are sized by count and by bytes: large images never make a part too big for memory or a store."""
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):  # noise: every file about the same size
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(src / f"{k}.png")
    p = params.defaults() | {"source": str(src), "part_size": 4,
                             "part_bytes": 2 * min(f.stat().st_size for f in src.iterdir())}
    ingest_stage.STAGE.run(Context(root=tmp_path / "run", params=p, progress=False))
    work = tmp_path / "run/work/ingest"
    assert [parts.num_rows(work, i) for i in parts.list_parts(work)] == [2, 2, 1]


def test_stage_fails_clearly_when_nothing_is_usable(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"")
    p = params.defaults() | {"source": str(src)}
    with pytest.raises(ingest_stage.NoImages, match="rejects.parquet"):
        ingest_stage.STAGE.run(Context(root=tmp_path / "run", params=p, progress=False))
    assert pl.read_parquet(tmp_path / "run/reports/rejects.parquet").height == 1


def _photo(seed: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A small distinct image file (noise), encoded as ``fmt``."""
    arr = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def test_ingest_keeps_where_a_local_file_lies_and_a_stage_refuses_it_changed_or_gone_by_name(tmp_path, monkeypatch):
    """``ingest.images: reference``: a file kept as it came is recorded as where it lies (a source named relative
    to the project, as under DVC, stays relative: a clone resolves it in its own folder), not copied; a re-encoded
    one keeps its bytes. A stage reads the file back through the one resolver, and a file changed or gone since
    ingest stops it, named."""
    from groundcap.pipeline import order, runner
    from groundcap.sources import reference

    monkeypatch.chdir(tmp_path)
    root, src = Path("."), Path("photos")
    src.mkdir()
    files = {"a.jpg": _photo(1), "b.jpg": _photo(2), "gray.png": _photo(3, "PNG", "L")}
    for name, data in files.items():
        (src / name).write_bytes(data)
    p = params.defaults() | {"source": "photos"}
    p["release"] = {**p["release"], "redact": "none"}
    ctx = Context(root=root, params=p, progress=False)
    ingest_stage.STAGE.run(ctx)
    work = root / "work" / "ingest"
    rows = {r["source_path"]: r for r in parts.read_part(work, 0)}
    assert rows["a.jpg"]["bytes"] is None and rows["a.jpg"]["reference"] == {
        "path": "photos/a.jpg", "offset": 0, "size": len(files["a.jpg"]),
        "sha256": hashlib.sha256(files["a.jpg"]).hexdigest()}
    assert rows["gray.png"]["reference"] is None and rows["gray.png"]["bytes"]  # re-encoded to RGB: its bytes kept
    read = reference.read_part(work, 0, ["image_id", "bytes"], root)
    assert read.column_names == ["image_id", "bytes"]
    assert dict(zip(read["image_id"].to_pylist(), read["bytes"].to_pylist(), strict=True)) == {
        r["image_id"]: files[name] if r["bytes"] is None else r["bytes"] for name, r in rows.items()}

    (src / "b.jpg").write_bytes(_photo(4))  # same name, other pixels: never substituted
    with pytest.raises(reference.SourceChanged, match=f"image {rows['b.jpg']['image_id']}: its source file "
                                                     f"{src / 'b.jpg'} changed since ingest"):
        runner.run_stage(ctx, order.stage("redact"))
    assert not parts.list_parts(root / "work" / "redact")
    (src / "b.jpg").unlink()
    with pytest.raises(reference.SourceChanged, match=f"{src / 'b.jpg'} cannot be read"):
        reference.read_part(work, 0, ["image_id", "bytes"], root)


def test_resolved_bytes_are_the_same_across_array_bounds_and_keep_their_nulls(tmp_path, monkeypatch):
    """``reference.resolve`` reads each image into one binary array's buffer, a new array past 2 GiB (here past a
    bound as small as an image): the bytes, the rows' own bytes and their nulls come out the same either way."""
    import pyarrow as pa

    from groundcap import schema
    from groundcap.sources import reference

    files = {"a.jpg": _photo(1), "b.jpg": _photo(2)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    refs = [{"path": name, "offset": 0, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()]
    table = pa.table({"image_id": ["a", "none", "own", "b"], "bytes": [None, None, b"kept", None],
                      "reference": pa.array([refs[0], None, None, refs[1]], schema.REFERENCE)})
    for bound, arrays in ((2**31 - 1, 1), (max(map(len, files.values())), 2)):
        monkeypatch.setattr(reference, "_ARRAY_BYTES", bound)
        out = reference.resolve(table, tmp_path)
        assert out.column_names == ["image_id", "bytes"] and out["bytes"].num_chunks >= arrays
        assert out["bytes"].to_pylist() == [files["a.jpg"], None, b"kept", files["b.jpg"]]
    (tmp_path / "b.jpg").write_bytes(files["b.jpg"][:-1])  # cut short: read into its slot, then refused by name
    with pytest.raises(reference.SourceChanged, match="b.jpg changed since ingest"):
        reference.resolve(table, tmp_path)


def test_a_tar_member_is_referenced_at_its_offset_and_copy_keeps_the_bytes(tmp_path):
    """A local tar's member is read back at its offset; ``ingest.images: copy`` keeps every image's bytes."""
    import tarfile

    from groundcap.sources import reference

    shard, files = tmp_path / "train-00000.tar", {"k0.jpg": _photo(5), "k1.jpg": _photo(6)}
    with tarfile.open(shard, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for images in ("reference", "copy"):
        root = tmp_path / images
        p = params.defaults() | {"source": f"wds:{shard}"}
        p["ingest"] = {**p["ingest"], "images": images}
        ingest_stage.STAGE.run(Context(root=root, params=p, progress=False))
        work = root / "work" / "ingest"
        stored = parts.read_part(work, 0, ["bytes", "reference"])
        if images == "reference":
            assert [r["bytes"] for r in stored] == [None, None]
            assert [r["reference"]["path"] for r in stored] == [str(shard)] * 2
            assert all(r["reference"]["offset"] % 512 == 0 and r["reference"]["offset"] > 0 for r in stored)
        else:
            assert [r["bytes"] for r in stored] == list(files.values())
            assert [r["reference"] for r in stored] == [None, None]
        assert reference.read_part(work, 0, ["bytes"], root)["bytes"].to_pylist() == list(files.values())
