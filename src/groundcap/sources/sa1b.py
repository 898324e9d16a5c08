"""SA-1B: ``sa1b:<folder>`` or ``sa1b:<tar or brace pattern>`` of ``sa_N.jpg`` with its ``sa_N.json``.

The JSON is SA-1B's own: ``{"image": {image_id, width, height, file_name}, "annotations": [{id,
segmentation: {size, counts}, bbox, area, predicted_iou, stability_score, crop_box, point_coords}]}``.
Its masks become the image's given masks (class-agnostic: no label; SAM's quality estimates kept).
SA-1B has no licence per image: every image is under Meta's SA-1B research licence (``licenses.SA1B``), which
forbids redistribution, so an embedded release refuses them at ingest.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from pathlib import Path

from groundcap import masks
from groundcap.errors import SourceError
from groundcap.licenses import SA1B
from groundcap.sources import local, validate
from groundcap.sources.entry import GivenLoader, Local, Reader, SourceFile
from groundcap.sources.files import listing
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
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {type(exc).__name__}: {exc}") from None
    image = doc.get("image") if isinstance(doc, dict) else None
    annotations = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(image, dict) or not isinstance(annotations, list):
        raise ValueError("not SA-1B annotation JSON (an object with 'image' an object and 'annotations' a list)")
    height, width = validate.side(image.get("height"), "image height"), validate.side(image.get("width"), "image width")
    out = []
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise ValueError(f"annotations[{n}] is not an object")
        try:
            out.append({"segmentation": masks.from_segmentation(ann.get("segmentation"), height, width), "label": "",
                        "source": NAME, "predicted_iou": validate.score(ann.get("predicted_iou"), "predicted_iou"),
                        "stability_score": validate.score(ann.get("stability_score"), "stability_score")})
        except ValueError as exc:
            raise ValueError(f"annotations[{n}]: {exc}") from None
    return out


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
        return _iter_folder(folder, policy)
    shards = expand(source, target)
    policy.require(source, shards)
    return (item for shard in shards for item in _iter_shard(shard, policy))


def _bad(message: str) -> GivenLoader:
    def load() -> list[dict]:
        raise ValueError(message)

    return load


def _iter_folder(folder: Path, policy: SourcePolicy) -> Iterator[SourceFile]:
    """Every ``*.jpg`` under ``folder`` (sorted) with its sibling JSON, listed as a folder source is (a FIFO or
    a link out of the folder is refused, never opened); a JSON without its image is a rejection."""
    found = {rel.as_posix(): (path, refused) for rel, path, refused in listing(folder, policy)
             if rel.suffix.lower() in (".jpg", ".json")}
    stems = {posixpath.splitext(rel)[0] for rel in found if rel.lower().endswith(".jpg")}
    for rel, (path, refused) in found.items():
        stem, ext = posixpath.splitext(rel)
        if ext.lower() == ".json":
            if stem not in stems:
                yield failed(rel, "SA-1B annotation without its image (.jpg)")
            continue
        if refused:
            yield SourceFile(rel, refused=refused)
            continue
        name = posixpath.basename(stem) + ".json"
        ann_path, ann_refused = found.get(stem + ".json", (None, None))
        given = (_bad(f"no {name} beside the image") if ann_path is None else
                 _bad(f"{name}: {ann_refused}") if ann_refused else _loader(local.reader(ann_path, follow=False)))
        yield SourceFile(rel, local.reader(path, follow=False), license=SA1B, given=given, local=Local(path))


def _iter_shard(shard: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """Pairs in one tar, in tar order, whichever of the two comes first; unpaired members, links and second
    members of one path are rejections."""
    pending: dict[str, Member] = {}
    for item in members(shard, policy):
        if isinstance(item, SourceFile):
            yield item
            continue
        stem, ext = posixpath.splitext(item.path)
        if ext.lower() not in (".jpg", ".json"):
            continue
        if item.refused:
            yield SourceFile(item.name, refused=item.refused)
            continue
        other = pending.pop(stem, None)
        if other is None:
            pending[stem] = item
            continue
        if posixpath.splitext(other.path)[1].lower() == ext.lower():  # sa_1.jpg and sa_1.JPG in one tar
            pending[stem] = other
            yield failed(item.name, "duplicate member in the tar")
            continue
        image, ann = (item, other) if ext.lower() == ".jpg" else (other, item)
        yield SourceFile(image.name, image.reader(policy), license=SA1B, given=_loader(ann.reader(policy)),
                         local=image.local)
    for stem, item in pending.items():
        if item.path.lower().endswith(".jpg"):
            yield SourceFile(item.name, item.reader(policy), license=SA1B,
                             given=_bad(f"no {posixpath.basename(stem)}.json beside the image"), local=item.local)
        else:
            yield failed(item.name, "SA-1B annotation without its image (.jpg)")
