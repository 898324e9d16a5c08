"""A COCO-format dataset: ``coco:<annotations.json>?images=<folder>`` (images default to the JSON's folder).

Each entry of ``images`` is one image, read from ``<images>/<file_name>`` (a local folder or an fsspec
URL) as a list's line is (``files.entry_file``: the source policy's protocols, a regular local file);
the annotation file and the images folder must be of protocols the policy names. Its instances become
given masks (polygons rasterized, RLE kept as it is), labelled with their
category's name; its ``license`` id is looked up in ``licenses`` (a Creative Commons link read as its SPDX
id, ``groundcap.licenses.identify``).

Nothing in the file is trusted (``sources.validate``): an image entry whose id is no integer or is shared
with another entry (its instances could not be told apart), or whose ``file_name`` leads out of the images
folder, is a rejection with its reason, as is each instance that attaches to no image; a bad mask, size or
category rejects its image; a category or licence that cannot be looked up refuses the whole file.

An annotation file grows with the dataset (COCO train2017's is 450 MB), and an image's instances may
be anywhere in it, so it is never loaded whole: one streaming parse (ijson) files the images, in
their order, and the instances, by image, into SQLite's own temporary database (a file unlinked as it is
created, so no exit, not even a kill, leaves it behind); the images are then yielded from it one at a time
with their instances. Categories and licences are kept in memory (a few hundred entries).
"""

from __future__ import annotations

import json
import posixpath
import sqlite3
from collections.abc import Iterator

import ijson
from ijson.common import ObjectBuilder

from groundcap import masks
from groundcap.errors import SourceError
from groundcap.licenses import identify
from groundcap.sources import local, validate
from groundcap.sources.entry import GivenLoader, SourceFile
from groundcap.sources.files import entry_file
from groundcap.sources.policy import LOCAL, SourcePolicy, describe, protocol_of
from groundcap.sources.spec import split_options

NAME = "coco"
SECTIONS = ("images", "annotations", "categories", "licenses")  # the top-level arrays read
_BATCH = 1000  # rows per SQLite insert


def _items(fh) -> Iterator[tuple[str, int, object]]:
    """(section, position in its array, item) for every item of the SECTIONS arrays, in file order, one item in
    memory at a time; an item that is no object (a number, a list) comes as it is, for the caller to refuse."""
    prefixes = {f"{section}.item": section for section in SECTIONS}
    positions = dict.fromkeys(SECTIONS, 0)
    builder, at = None, None
    for prefix, event, value in ijson.parse(fh, use_float=True):
        if builder is None:
            if prefix not in prefixes or event in ("map_key", "end_map", "end_array"):
                continue
            if event not in ("start_map", "start_array"):
                yield prefixes[prefix], _next(positions, prefixes[prefix]), value
                continue
            builder, at = ObjectBuilder(), prefix
        builder.event(event, value)
        if prefix == at and event in ("end_map", "end_array"):
            yield prefixes[at], _next(positions, prefixes[at]), builder.value
            builder = None


def _next(positions: dict[str, int], section: str) -> int:
    positions[section] += 1
    return positions[section] - 1


def _key(item, field: str) -> int | None:
    """``item[field]`` when it is a valid id (:func:`validate.ident`), else None (refused later, with its reason)."""
    value = item.get(field) if isinstance(item, dict) else None
    return value if type(value) is int and 0 <= value <= validate.MAX_ID else None


def _named(source: str, section: str, n: int, item, names: dict) -> None:
    """File a category's or licence's id -> name in ``names``; one that cannot be looked up refuses the file."""
    try:
        if not isinstance(item, dict):
            raise validate.Invalid("not an object")
        key = validate.ident(item.get("id"), "id")
        if key in names:
            raise validate.Invalid(f"id {key} given twice")
        if section == "categories":
            names[key] = validate.text(item.get("name"), "name")
        else:
            names[key] = identify(str(item.get("name") or item.get("url") or key), item.get("url"))
    except validate.Invalid as exc:
        raise SourceError(f"source {source!r}: {section}[{n}]: {exc}") from None


def _index(source: str, path: str, db: sqlite3.Connection, policy: SourcePolicy) -> tuple[dict, dict]:
    """File the images and instances of ``path`` into ``db``; returns (categories, licences) by id."""
    db.execute("create table images (seq integer primary key, id integer, doc text)")
    db.execute("create table anns (seq integer primary key, image_id integer, id integer, doc text)")
    names: dict[str, dict] = {"categories": {}, "licenses": {}}
    seen: set[str] = set()
    pending: dict[str, list] = {"images": [], "annotations": []}

    def flush() -> None:
        db.executemany("insert into images values (?, ?, ?)", pending["images"])
        db.executemany("insert into anns values (?, ?, ?, ?)", pending["annotations"])
        pending["images"], pending["annotations"] = [], []

    try:
        with policy.open(path) as fh:
            for section, n, item in _items(fh):
                seen.add(section)
                if section == "images":
                    pending["images"].append((n, _key(item, "id"), json.dumps(item)))
                elif section == "annotations":
                    pending["annotations"].append((n, _key(item, "image_id"), _key(item, "id"), json.dumps(item)))
                else:
                    _named(source, section, n, item, names[section])
                if len(pending["images"]) + len(pending["annotations"]) >= _BATCH:
                    flush()
    except (OSError, ijson.JSONError) as exc:  # yajl's messages go on to quote the file over several lines
        raise SourceError(f"source {source!r}: cannot read the COCO annotation file: "
                          f"{describe(exc).splitlines()[0]}") from None
    except RecursionError:
        raise SourceError(f"source {source!r}: {path} nests its values too deeply to be COCO") from None
    if "images" not in seen:
        raise SourceError(f"source {source!r}: {path} is not a COCO annotation file (no 'images' list)")
    flush()
    db.execute("create index anns_by_image on anns (image_id, seq)")
    return names["categories"], names["licenses"]


def iter_coco(source: str, target: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """The images with their instances; an annotation file or images folder whose protocol the policy refuses,
    or a local annotation file that is no regular file (a FIFO would block), refuses the source, before any read."""
    path, options = split_options(source, target, {"images": None})
    images = (options["images"] or posixpath.dirname(path) or ".").rstrip("/")
    policy.require(source, [path, images])
    if protocol_of(path) == LOCAL and (why := local.refusal(path.removeprefix("file://"))):
        raise SourceError(f"source {source!r}: cannot read the COCO annotation file: {why}")
    return _iter(source, path, images, policy)


def _iter(source: str, path: str, images: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """Each image entry in file order, then each annotation no image takes, as a rejection."""
    db = sqlite3.connect("")  # SQLite's own temporary file, unlinked as it is created: no exit leaves it behind
    try:
        categories, licenses = _index(source, path, db, policy)
        twice = {"images": _twice(db, "select id from images where id is not null group by id having count(*) > 1"),
                 "anns": _twice(db, "select id from anns where id is not null group by id having count(*) > 1")}
        for seq, doc in db.execute("select seq, doc from images order by seq"):
            entry = json.loads(doc)
            anns = [json.loads(a) for (a,) in db.execute(
                "select doc from anns where image_id = ? order by seq", (_key(entry, "id"),))]
            yield _image(seq, entry, anns, images, policy, categories, licenses, twice)
        for seq, doc in db.execute("select seq, doc from anns where image_id is null or image_id not in "
                                   "(select id from images where id is not null) order by seq"):
            yield SourceFile(f"annotations[{seq}]", refused=_orphan(json.loads(doc)))
    finally:
        db.close()


def _twice(db: sqlite3.Connection, query: str) -> set[int]:
    return {key for (key,) in db.execute(query)}


def _image(seq: int, entry, anns: list[dict], images: str, policy: SourcePolicy, categories: dict, licenses: dict,
           twice: dict[str, set]) -> SourceFile:
    """One image entry's file, or its refusal: an id that is no integer or that another image has too (whose
    annotations would be which?), a file name that is no string or leads out of the images folder."""
    if not isinstance(entry, dict):
        return SourceFile(f"images[{seq}]", refused="an image entry that is not an object")
    name = entry.get("file_name")
    name = name if isinstance(name, str) and name else f"images[{seq}]"
    try:
        image_id = validate.ident(entry.get("id"), "image id")
        file_name = validate.text(entry.get("file_name"), "file_name")
        if image_id in twice["images"]:
            raise validate.Invalid(f"image id {image_id} is given to more than one image: whose are its annotations?")
        licence = entry.get("license")
        if licence is not None:
            validate.ident(licence, "license")
        entry_path = validate.confined(images, file_name, policy)
    except validate.Invalid as exc:
        return SourceFile(name, refused=str(exc))
    return entry_file(file_name, entry_path, policy, license=licenses.get(licence),
                      given=_loader(entry, anns, categories, twice["anns"]))


def _orphan(ann) -> str:
    """Why an annotation attaches to no image."""
    if not isinstance(ann, dict):
        return "an annotation that is not an object"
    try:
        image_id = validate.ident(ann.get("image_id"), "image_id")
    except validate.Invalid as exc:
        return f"annotation of no image: {exc}"
    return f"annotation of no image: image_id {image_id} names no image entry"


def _loader(entry: dict, anns: list[dict], categories: dict, twice: set[int]) -> GivenLoader:
    def load() -> list[dict]:
        height = validate.side(entry.get("height"), "image height")
        width = validate.side(entry.get("width"), "image width")
        out = []
        for ann in anns:
            ann_id = validate.ident(ann.get("id"), "annotation id")
            if ann_id in twice:
                raise ValueError(f"annotation id {ann_id} is given to more than one annotation")
            category = ann.get("category_id")
            if type(category) is not int or category not in categories:
                raise ValueError(f"annotation {ann_id}: unknown category {category!r}")
            try:
                rle = masks.from_segmentation(ann.get("segmentation"), height, width)
            except ValueError as exc:
                raise ValueError(f"annotation {ann_id}: {exc}") from None
            out.append({"segmentation": rle, "label": categories[category], "source": NAME,
                        "predicted_iou": None, "stability_score": None})
        return out

    return load
