"""SA-1B: ``sa1b:<folder>`` or ``sa1b:<tar or brace pattern>`` of ``sa_N.jpg`` with its ``sa_N.json``.

The JSON is SA-1B's own: ``{"image": {image_id, width, height, file_name}, "annotations": [{id,
segmentation: {size, counts}, bbox, area, predicted_iou, stability_score, crop_box, point_coords}]}``.
Its masks become the image's given masks (class-agnostic: no label; SAM's quality estimates kept).
SA-1B has no licence per image (the whole set is under Meta's SA-1B research licence).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from pathlib import Path

from groundcap import masks
from groundcap.errors import SourceError
from groundcap.sources.entry import GivenLoader, Reader, SourceFile
from groundcap.sources.policy import SourcePolicy
from groundcap.sources.tars import Member, expand, failed, members

NAME = "sa1b"
MAX_JSON_BYTES = 256 * 1024 * 1024  # SA-1B's largest annotation files are a few MB


def given_masks(data: bytes) -> list[dict]:
    """The given masks of one SA-1B annotation file (ValueError when it is not one)."""
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"annotation file larger than {MAX_JSON_BYTES} bytes")
    try:
        doc = json.loads(data)
        image = doc["image"]
        height, width = int(image["height"]), int(image["width"])
        return [{"segmentation": masks.from_segmentation(a["segmentation"], height, width), "label": "",
                 "source": NAME, "predicted_iou": _number(a.get("predicted_iou")),
                 "stability_score": _number(a.get("stability_score"))} for a in doc["annotations"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not SA-1B annotation JSON (missing or bad {exc})") from None


def _number(value) -> float | None:
    return None if value is None else float(value)


def _loader(read: Reader) -> GivenLoader:
    return lambda: given_masks(read(MAX_JSON_BYTES + 1))


def iter_sa1b(source: str, target: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """A folder's or the tars' pairs; a tar whose protocol the policy refuses refuses the source, before any read."""
    if not target:
        raise SourceError(f"source {source!r} names no folder or tar: sa1b:<folder> or "
                          "sa1b:sa_{000000..000009}.tar")
    folder = Path(target.removeprefix("file://"))
    if "://" not in target.removeprefix("file://") and folder.is_dir():
        policy.require(source, [target])
        return _iter_folder(folder)
    shards = expand(target)
    policy.require(source, shards)
    return (item for shard in shards for item in _iter_shard(shard, policy))


def _file_reader(path: Path) -> Reader:
    def read(limit: int) -> bytes:
        with path.open("rb") as fh:
            return fh.read(limit)

    return read


def _missing(name: str) -> GivenLoader:
    def load() -> list[dict]:
        raise ValueError(f"no {name} beside the image")

    return load


def _iter_folder(folder: Path) -> Iterator[SourceFile]:
    """Every ``*.jpg`` under ``folder`` (sorted) with its sibling JSON; a JSON without its image is a rejection."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".json"))
    stems = {p.with_suffix("").as_posix() for p in files if p.suffix.lower() == ".jpg"}
    for path in files:
        rel = path.relative_to(folder).as_posix()
        if path.suffix.lower() == ".json":
            if path.with_suffix("").as_posix() not in stems:
                yield failed(rel, "SA-1B annotation without its image (.jpg)")
            continue
        ann = path.with_suffix(".json")
        given = _loader(_file_reader(ann)) if ann.is_file() else _missing(ann.name)
        yield SourceFile(rel, _file_reader(path), given=given)


def _iter_shard(shard: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """Pairs in one tar, in tar order, whichever of the two comes first; unpaired members are rejections."""
    pending: dict[str, Member] = {}
    for item in members(shard, policy):
        if isinstance(item, SourceFile):
            yield item
            continue
        stem, ext = posixpath.splitext(item.path)
        if ext.lower() not in (".jpg", ".json"):
            continue
        other = pending.pop(stem, None)
        if other is None:
            pending[stem] = item
            continue
        if posixpath.splitext(other.path)[1].lower() == ext.lower():  # the same member twice in one tar
            pending[stem] = other
            yield failed(item.name, "duplicate member in the tar")
            continue
        image, ann = (item, other) if ext.lower() == ".jpg" else (other, item)
        yield SourceFile(image.name, image.reader(policy), given=_loader(ann.reader(policy)))
    for stem, item in pending.items():
        if item.path.lower().endswith(".jpg"):
            yield SourceFile(item.name, item.reader(policy), given=_missing(posixpath.basename(stem) + ".json"))
        else:
            yield failed(item.name, "SA-1B annotation without its image (.jpg)")
