"""A COCO-format dataset: ``coco:<annotations.json>?images=<folder>`` (images default to the JSON's folder).

Each entry of ``images`` is one image, read from ``<images>/<file_name>`` (a local folder or an fsspec
URL) as a list's line is (``files.entry_file``: the source policy's protocols, a regular local file);
the annotation file and the images folder must be of protocols the policy names. Its instances become
given masks (polygons rasterized, RLE kept as it is), labelled with their
category's name; its ``license`` id is looked up in ``licenses``.

An annotation file grows with the dataset (COCO train2017's is 450 MB), and an image's instances may
be anywhere in it, so it is never loaded whole: one streaming parse (ijson) files the images, in
their order, and the instances, by image, into an SQLite index in a temporary folder; the images
are then yielded from it one at a time with their instances. Categories and licences are kept in
memory (a few hundred entries).
"""

from __future__ import annotations

import json
import posixpath
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import ijson
from ijson.common import ObjectBuilder

from groundcap import masks
from groundcap.errors import SourceError
from groundcap.sources.entry import GivenLoader, SourceFile
from groundcap.sources.files import entry_file
from groundcap.sources.policy import SourcePolicy, describe
from groundcap.sources.spec import split_options

NAME = "coco"
SECTIONS = ("images", "annotations", "categories", "licenses")  # the top-level arrays read
_BATCH = 1000  # rows per SQLite insert


def _items(fh) -> Iterator[tuple[str, dict]]:
    """(section, item) for every item of the SECTIONS arrays, in file order, one item in memory at a time."""
    prefixes = {f"{section}.item": section for section in SECTIONS}
    builder, at = None, None
    for prefix, event, value in ijson.parse(fh, use_float=True):
        if builder is None:
            if prefix in prefixes and event == "start_map":
                builder, at = ObjectBuilder(), prefix
                builder.event(event, value)
            continue
        builder.event(event, value)
        if prefix == at and event == "end_map":
            yield prefixes[at], builder.value
            builder = None


def _index(source: str, path: str, db: sqlite3.Connection, policy: SourcePolicy) -> tuple[dict, dict]:
    """File the images and instances of ``path`` into ``db``; returns (categories, licences) by id."""
    db.execute("create table images (seq integer primary key, doc text)")
    db.execute("create table anns (image_id text, seq integer, doc text)")
    categories, licenses, seen = {}, {}, set()
    pending: dict[str, list] = {"images": [], "annotations": []}

    def flush() -> None:
        db.executemany("insert into images (doc) values (?)", pending["images"])
        db.executemany("insert into anns values (?, ?, ?)", pending["annotations"])
        pending["images"], pending["annotations"] = [], []

    try:
        with policy.open(path) as fh:
            for n, (section, item) in enumerate(_items(fh)):
                seen.add(section)
                if section == "images":
                    pending["images"].append((json.dumps(item),))
                elif section == "annotations":
                    pending["annotations"].append((json.dumps(item.get("image_id")), n, json.dumps(item)))
                elif section == "categories":
                    categories[item.get("id")] = item.get("name")
                else:
                    licenses[item.get("id")] = str(item.get("name") or item.get("url") or item.get("id"))
                if len(pending["images"]) + len(pending["annotations"]) >= _BATCH:
                    flush()
    except (OSError, ijson.JSONError) as exc:
        raise SourceError(f"source {source!r}: cannot read the COCO annotation file: {describe(exc)}") from None
    if "images" not in seen:
        raise SourceError(f"source {source!r}: {path} is not a COCO annotation file (no 'images' list)")
    flush()
    db.execute("create index anns_by_image on anns (image_id, seq)")
    return categories, licenses


def iter_coco(source: str, target: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """The images with their instances; an annotation file or images folder whose protocol the policy refuses
    refuses the source, before any read."""
    path, options = split_options(source, target, {"images": None})
    images = (options["images"] or posixpath.dirname(path) or ".").rstrip("/")
    policy.require(source, [path, images])
    return _iter(source, path, images, policy)


def _iter(source: str, path: str, images: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    with tempfile.TemporaryDirectory(prefix="groundcap-coco-") as tmp:
        db = sqlite3.connect(Path(tmp) / "index.sqlite")
        try:
            categories, licenses = _index(source, path, db, policy)
            for (doc,) in db.execute("select doc from images order by seq"):
                entry = json.loads(doc)
                anns = [json.loads(a) for (a,) in db.execute(
                    "select doc from anns where image_id = ? order by seq", (json.dumps(entry.get("id")),))]
                file_name = str(entry.get("file_name") or "")
                if not file_name:
                    yield SourceFile(f"image id {entry.get('id')}", _no_file)
                    continue
                yield entry_file(file_name, f"{images}/{file_name}", policy,
                                 license=licenses.get(entry.get("license")), given=_loader(entry, anns, categories))
        finally:
            db.close()


def _no_file(limit: int) -> bytes:
    raise OSError("COCO image entry without a file_name")


def _loader(entry: dict, anns: list[dict], categories: dict) -> GivenLoader:
    def load() -> list[dict]:
        height, width = int(entry["height"]), int(entry["width"])
        out = []
        for ann in anns:
            if ann.get("category_id") not in categories:
                raise ValueError(f"annotation {ann.get('id')}: unknown category {ann.get('category_id')!r}")
            try:
                rle = masks.from_segmentation(ann.get("segmentation"), height, width)
            except ValueError as exc:
                raise ValueError(f"annotation {ann.get('id')}: {exc}") from None
            out.append({"segmentation": rle, "label": categories[ann["category_id"]], "source": NAME,
                        "predicted_iou": None, "stability_score": None})
        return out

    return load
