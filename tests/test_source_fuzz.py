"""Issue 27: a seeded, structure-aware fuzz of what annotated and packed sources read (COCO JSON, SA-1B JSON,
tar members). Each case is the real file read by the real source reader, as ingest reads it short of decoding
the pixels. Every item must be accounted for (read with its masks, or refused with a reason), a file refused
as a whole must say so in one line, nothing may crash or hang, and nothing outside the source may be opened
(an audit hook watches every ``open``)."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import sys
import tarfile
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from groundcap import masks
from groundcap.sources import SourceError, SourcePolicy, iter_source, sa1b
from groundcap.sources.webdataset import is_image

H, W = 12, 16
POLICY = SourcePolicy(file_timeout_s=5)
_opened: list[str] | None = None  # the paths opened while a fuzz runs (None: not watching)


def _watch(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_watch)


@pytest.fixture
def watched(tmp_path):
    """``(source folder, outside folder)``; after the test, no path under ``outside`` (a secret, the target of a
    link, a FIFO) may have been opened."""
    global _opened
    source, outside = tmp_path / "source", tmp_path / "outside"
    (source / "images").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(_jpeg(0))
    (source / "images/out.jpg").symlink_to(outside / "secret.jpg")
    os.mkfifo(outside / "pipe.jpg")
    (source / "images/pipe.jpg").symlink_to(outside / "pipe.jpg")  # a link out, to a FIFO: both refused
    os.mkfifo(source / "images/fifo.jpg")
    _opened = []
    try:
        yield source, outside
        assert _opened, "the audit hook saw no open at all"
        outside_real = os.path.realpath(outside) + os.sep
        escaped = [p for p in _opened if os.path.realpath(p).startswith(outside_real) or p.endswith("fifo.jpg")]
        assert not escaped, escaped[:5]
    finally:
        _opened = None


def _overwrite(path, data: bytes) -> None:
    """``path`` now holds ``data``: written over, then cut (a truncating open costs milliseconds on this disk)."""
    with open(path, "r+b" if os.path.exists(path) else "wb") as fh:
        fh.write(data)
        fh.truncate()


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _rle(seed: int) -> dict:
    mask = np.asfortranarray(np.random.default_rng(seed).random((H, W)) > 0.5, dtype=np.uint8)
    out = coco_mask.encode(mask)
    return {"size": [H, W], "counts": out["counts"].decode("ascii")}


HOSTILE = [None, True, 0, -1, 1.0, 2.5, 2**64, 1e10, -1e10, "", "x", "é\x00", "../../outside/secret.jpg",
           "out.jpg", "pipe.jpg", "fifo.jpg", "a::http://127.0.0.1:9/x.jpg", [], {}, [1], [[0, 0, 5, 0, 5, 5]],
           {"size": [H, W], "counts": "PP"}, {"size": [H, W], "counts": [H * W]}, {"a": 1}, "0" * 40, "o" * 9]


def _nodes(value, path=()):
    """Every (path, value) in a JSON document, the root included."""
    yield path, value
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _nodes(child, (*path, key))


def _mutate(doc, rng: random.Random):
    """One structure-aware change: a value replaced by a hostile one, a key dropped, a list item repeated, a
    number scaled or made a float, a string's character changed, or a value nested deep."""
    path, value = rng.choice(list(_nodes(doc))[1:])
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key, op = path[-1], rng.randrange(7)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, list):
        parent.insert(rng.randrange(len(parent) + 1), copy.deepcopy(value))
    elif op == 2 and isinstance(value, int | float) and not isinstance(value, bool):
        parent[key] = rng.choice([value * 1e10, -value, float(value), value + 1, int(value) * 2**40])
    elif op == 3 and isinstance(value, str) and value:
        i = rng.randrange(len(value))
        parent[key] = value[:i] + rng.choice(["", "0", "P", "é", "\x7f", value[i] * 3]) + value[i + 1:]
    elif op == 4:
        nested = value
        for _ in range(rng.choice([2, 60])):
            nested = [nested]
        parent[key] = nested
    else:
        parent[key] = copy.deepcopy(rng.choice(HOSTILE))


def _coco_base() -> dict:
    images = [{"id": n, "file_name": f"{n}.jpg", "height": H, "width": W, "license": 1} for n in (1, 2, 3)]
    anns = [{"id": 10 * n + k, "image_id": n, "category_id": 1 + k % 2,
             "segmentation": [[1.0, 1.0, 12.0, 1.0, 12.0, 9.0, 1.0, 9.0]] if k == 0 else _rle(n * 10 + k)}
            for n in (1, 2, 3) for k in range(2)]
    anns[-1]["segmentation"] = {"size": [H, W], "counts": [H * W - 20, 20]}
    return {"images": images, "annotations": anns, "licenses": [{"id": 1, "name": "CC0"}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "box"}]}


def _covers(given: dict) -> bool:
    """Whether a given mask is an RLE of the image's size whose runs cover its pixels exactly."""
    rle = given["segmentation"]
    return rle["size"] == [H, W] and int(masks.run_lengths(rle).sum()) == H * W


def _valid_id(value) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _check_coco(source: str, doc) -> str:
    """The outcome of one COCO file, checked: each image entry one item, each annotation either one of its
    image's masks or a reject row of its own."""
    try:
        items = list(iter_source(source, POLICY))
    except SourceError as exc:
        assert str(exc) and "\n" not in str(exc)
        return "file refused"
    images = doc.get("images") if isinstance(doc, dict) else None
    anns = doc.get("annotations") if isinstance(doc, dict) else []
    anns = anns if isinstance(anns, list) else []
    entries = [i for i in items if not i.name.startswith("annotations[")]
    orphans = [i for i in items if i.name.startswith("annotations[")]
    assert isinstance(images, list) and len(entries) == len(images)
    ids = {e["id"] for e in images if isinstance(e, dict) and _valid_id(e.get("id"))}
    assert len(orphans) == sum(not (isinstance(a, dict) and _valid_id(a.get("image_id")) and a["image_id"] in ids)
                               for a in anns)
    assert all(o.refused for o in orphans)
    for item, entry in zip(entries, images, strict=True):
        if item.refused:
            continue
        try:
            item.read(1 << 16)
            given = item.given()
        except (OSError, ValueError) as exc:
            assert str(exc)
            continue
        assert len(given) == sum(isinstance(a, dict) and _valid_id(a.get("image_id")) and a["image_id"] == entry["id"]
                                 for a in anns)
        assert all(_covers(g) for g in given)
    return "items"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_fuzzed_coco_files_are_all_accounted_for(watched):
    source, _ = watched
    for n in (1, 2, 3):
        (source / f"images/{n}.jpg").write_bytes(_jpeg(n))
    rng, path = random.Random(27), source / "instances.json"
    outcomes, base = {"file refused": 0, "items": 0}, _coco_base()
    for _ in range(1000):
        doc = copy.deepcopy(base)
        for _ in range(rng.choice([1, 1, 2, 3])):
            _mutate(doc, rng)
        try:
            _overwrite(path, json.dumps(doc).encode())
        except (RecursionError, ValueError):
            continue
        outcomes[_check_coco(f"coco:{path}?images={source}/images", doc)] += 1
    assert min(outcomes.values()) > 100, outcomes  # both outcomes well exercised


def _sa1b_base() -> dict:
    anns = [{"id": k, "segmentation": _rle(k), "bbox": [0, 0, 4, 4], "area": 16, "predicted_iou": 0.9,
             "stability_score": 0.95, "point_coords": [[1.0, 2.0]]} for k in range(3)]
    return {"image": {"image_id": 1, "width": W, "height": H, "file_name": "sa_1.jpg"}, "annotations": anns}


@pytest.mark.timeout(60)
def test_fuzzed_sa1b_annotation_files_give_their_masks_or_a_reason():
    rng = random.Random(28)
    doc_base = _sa1b_base()
    base = json.dumps(doc_base).encode()
    outcomes = {"masks": 0, "refused": 0}
    for n in range(2000):
        doc = copy.deepcopy(doc_base)
        for _ in range(rng.choice([1, 1, 2, 3])):
            _mutate(doc, rng)
        try:
            data = json.dumps(doc).encode()
        except (RecursionError, ValueError):
            continue
        if n % 10 == 0:  # raw bytes: cut short or a byte changed
            cut = rng.randrange(len(base))
            data = base[:cut] if n % 20 else base[:cut] + bytes([rng.randrange(256)]) + base[cut + 1:]
        try:
            given = sa1b.given_masks(data)
        except ValueError as exc:
            assert str(exc)
            outcomes["refused"] += 1
            continue
        assert len(given) == len(doc["annotations"]) and all(_covers(g) for g in given)
        assert all(g[k] is None or math.isfinite(g[k]) for g in given for k in ("predicted_iou", "stability_score"))
        outcomes["masks"] += 1
    assert min(outcomes.values()) > 100, outcomes


_NAMES = ["sa_1.jpg", "sa_1.json", "sa_2.jpg", "sa_2.json", "a.png", "a.txt", "../sa_3.jpg", "/abs/sa_4.jpg",
          "d/../../sa_5.jpg", "sa_1.JPG", "é.jpg"]
_TYPES = [tarfile.REGTYPE] * 6 + [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
                                  tarfile.DIRTYPE]
_LINKS = ["sa_1.jpg", "../outside/secret.jpg", "/etc/passwd", "sa_1.json"]


def _shard(rng: random.Random, jpeg: bytes, ann: bytes) -> tuple[bytes, list[tarfile.TarInfo]]:
    """A tar of random members (names, kinds, contents), and its headers."""
    buf, infos = io.BytesIO(), []
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for _ in range(rng.randrange(1, 7)):
            info = tarfile.TarInfo(rng.choice(_NAMES))
            info.type = rng.choice(_TYPES)
            data = b""
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = rng.choice(_LINKS)
            elif info.type == tarfile.REGTYPE:
                data = ann if info.name.endswith(".json") else jpeg
                data = data if rng.random() < 0.8 else data[: rng.randrange(len(data) + 1)]
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            infos.append(info)
    return buf.getvalue(), infos


@pytest.mark.timeout(60)
def test_fuzzed_tar_members_are_all_accounted_for(watched):
    source, _ = watched
    rng, jpeg = random.Random(29), _jpeg(1)
    doc = _sa1b_base()
    ann = json.dumps({**doc, "annotations": doc["annotations"][:1]}).encode()
    shard = source / "sa_000000.tar"
    rows = 0
    for n in range(800):
        data, infos = _shard(rng, jpeg, ann)
        if n % 8 == 0:  # a truncated or damaged shard
            cut = rng.randrange(len(data))
            data = data[:cut] if n % 16 else data[:cut] + bytes([rng.randrange(256)]) + data[cut + 1:]
        _overwrite(shard, data)
        for kind in ("wds", "sa1b"):
            items = list(iter_source(f"{kind}:{shard}", POLICY))
            if n % 8:  # an intact shard: each image member one item (a JSON of SA-1B one, or its image's masks)
                paths = [i.name.removeprefix("./") for i in infos if not i.isdir()]
                names = Counter(i.name.removeprefix(f"{shard.name}/") for i in items)
                images = Counter(p for p in paths if (is_image(p) if kind == "wds" else p.lower().endswith(".jpg")))
                assert not images - names, (images, names)
                assert len(items) <= len([p for p in paths if is_image(p) or p.lower().endswith(".json")])
            for item in items:
                rows += 1
                if item.refused:
                    continue
                try:
                    assert len(item.read(1 << 16)) <= 1 << 16
                    if item.given:
                        item.given()
                except (OSError, ValueError) as exc:
                    assert str(exc)
    assert rows > 1000
