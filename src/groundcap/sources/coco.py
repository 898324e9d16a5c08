"""A COCO-format dataset: ``coco:<annotations.json>?images=<folder>`` (images default to the JSON's folder).

Each entry of ``images`` is one image, read from ``<images>/<file_name>`` (a local folder or an fsspec
URL); its instances become given masks (polygons rasterized, RLE kept as it is), labelled with their
category's name; its ``license`` id is looked up in ``licenses``. The annotation file is read once and
indexed by image; each image's annotations are handed on and dropped as the images stream past.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from collections.abc import Iterator

import fsspec

from groundcap import masks
from groundcap.errors import SourceError
from groundcap.sources.entry import GivenLoader, Reader, SourceFile
from groundcap.sources.spec import split_options

NAME = "coco"


def _reader(url: str) -> Reader:
    def read(limit: int) -> bytes:
        with fsspec.open(url, "rb") as fh:
            return fh.read(limit)

    return read


def _load(source: str, path: str) -> dict:
    try:
        with fsspec.open(path, "rb") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SourceError(f"source {source!r}: cannot read the COCO annotation file: "
                          f"{type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise SourceError(f"source {source!r}: {path} is not a COCO annotation file (no 'images' list)")
    return doc


def _license_name(entry: dict) -> str:
    return str(entry.get("name") or entry.get("url") or entry.get("id"))


def iter_coco(source: str, target: str) -> Iterator[SourceFile]:
    path, options = split_options(source, target, {"images": None})
    doc = _load(source, path)
    images = (options["images"] or posixpath.dirname(path) or ".").rstrip("/")
    categories = {c["id"]: c["name"] for c in doc.get("categories") or []}
    licenses = {entry.get("id"): _license_name(entry) for entry in doc.get("licenses") or []}
    by_image: defaultdict[object, list[dict]] = defaultdict(list)
    for ann in doc.get("annotations") or []:
        by_image[ann.get("image_id")].append(ann)
    entries = doc["images"]
    del doc
    for entry in entries:
        file_name = str(entry.get("file_name") or "")
        if not file_name:
            yield SourceFile(f"image id {entry.get('id')}", _no_file)
            continue
        yield SourceFile(file_name, _reader(f"{images}/{file_name}"), license=licenses.get(entry.get("license")),
                         given=_loader(entry, by_image.pop(entry.get("id"), []), categories))


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
