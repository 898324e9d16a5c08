"""A release as a FiftyOne dataset: ``groundcap export fiftyone RELEASE``.

FiftyOne keeps images as files it references by path, so the images of the ``default`` config are
written once to a media folder (``{image_id}.jpg|png``, the released bytes) and the labels go to
FiftyOne's database: per sample the scene caption, QA score and image id as fields and the split as
a tag; per region a ``Detection`` in the ``regions`` field with its instance mask (the RLE decoded by
pycocotools, cropped to its box by ``Detection.from_mask``), its label, and the region id, short and
detailed caption, granularity, parent id, source and area as attributes. ``fiftyone`` is imported only
here (it starts its own MongoDB), from the optional extra ``groundcap[fiftyone]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from groundcap import masks
from groundcap.errors import BackendUnavailable, ReleaseError
from groundcap.splits import ALL_SPLITS

EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}
REGION_ATTRIBUTES = ("region_id", "short_caption", "detailed_caption", "granularity", "parent_id", "source", "area")
_SHARD = re.compile(r"^(?P<split>[a-z_]+)-\d{5}-of-\d{5}\.parquet$")


def shards(release: Path, split: str | None = None) -> dict[str, list[Path]]:
    """The ``default`` config's Parquet shards per split (``split`` alone when given), in split order."""
    found: dict[str, list[Path]] = {}
    for path in sorted((release / "data").glob("*.parquet")):
        if (match := _SHARD.match(path.name)) and (split is None or match["split"] == split):
            found.setdefault(match["split"], []).append(path)
    if not found:
        what = f"split {split!r} in " if split else ""
        raise ReleaseError(f"no {what}data/*.parquet shards in {release}: pass a release folder built by "
                           "`groundcap build` (and a split it holds)")
    if "image" not in pq.read_schema(next(iter(found.values()))[0]).names:
        raise ReleaseError(f"{release} holds no pixels (release.images: reference): rebuild them from your copy of "
                           "its source with `groundcap hydrate`, then export the hydrated folder")
    return {s: found[s] for s in sorted(found, key=lambda s: (ALL_SPLITS + (s,)).index(s))}


def default_name(release: Path) -> str:
    """``{name}-{version}`` as the release's croissant.json states them, else the folder's name."""
    path = Path(release) / "croissant.json"
    if path.is_file():
        doc = json.loads(path.read_text(encoding="utf-8"))
        return f"{doc['name']}-{doc['version']}"
    return Path(release).resolve().name


def rows(paths: list[Path], batch_size: int = 64) -> Iterator[dict]:
    """The rows of ``paths``, a batch at a time (a release may not fit in memory)."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            yield from batch.to_pylist()


def image_format(data: bytes) -> str:
    return "PNG" if data[:8] == b"\x89PNG\r\n\x1a\n" else "JPEG"


def sample(fo, row: dict, split: str, media_dir: Path):
    """The FiftyOne sample of a ``default`` row, its image written to ``media_dir`` (once)."""
    data = row["image"]["bytes"]
    path = media_dir / f"{row['image_id']}.{EXTENSIONS[image_format(data)]}"
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    detections = []
    for region in row["regions"]:
        mask = masks.decode(region["segmentation"]).astype(bool)
        attributes = {key: region[key] for key in REGION_ATTRIBUTES}
        detections.append(fo.Detection.from_mask(mask, label=region["label"], **attributes))
    fields = {key: row[key] for key in ("image_id", "scene_caption", "qa_score", "scene_caption_boxes") if key in row}
    return fo.Sample(filepath=str(path), tags=[split], regions=fo.Detections(detections=detections), **fields)


def export(release: str | Path, name: str | None = None, *, split: str | None = None,
           media_dir: str | Path | None = None, overwrite: bool = False, progress: bool = False):
    """Load ``release`` (its ``default`` config) into a persistent FiftyOne dataset ``name`` (default:
    ``default_name``); the dataset."""
    try:
        import fiftyone as fo
    except ImportError as exc:
        raise BackendUnavailable(f"{exc}: install the extra with `pip install 'groundcap[fiftyone]'`") from None

    release = Path(release)
    by_split = shards(release, split)
    name = name or default_name(release)
    if fo.dataset_exists(name):
        if not overwrite:
            raise ReleaseError(f"a FiftyOne dataset named {name!r} exists: pass --overwrite or another --name")
        fo.delete_dataset(name)
    media_dir = Path(media_dir) if media_dir else Path(fo.config.default_dataset_dir) / name
    media_dir.mkdir(parents=True, exist_ok=True)
    dataset = fo.Dataset(name, persistent=True)
    for split_name, paths in by_split.items():  # add_samples batches the generator itself
        dataset.add_samples((sample(fo, row, split_name, media_dir) for row in rows(paths)), progress=progress)
    return dataset
