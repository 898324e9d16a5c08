"""A Hugging Face dataset, streamed: ``hf://datasets/ORG/NAME`` on the Hub or ``hf:<folder>`` that
``datasets.load_dataset`` can read (Parquet, image folder, ...), with options
``?config=NAME&split=train&image=image&license=COLUMN&revision=REF``.

Rows come from ``load_dataset(..., streaming=True)``: nothing is downloaded first, rows arrive a
shard at a time. The image column is read undecoded (its bytes, or its path/URL). The licence of an
image is its ``license`` column when one is named, else the dataset's own licence when it states one
(``DatasetInfo.license``, or the ``license`` of its card's YAML).
The source path of a row is ``<dataset>/<split>/<row number>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec

from groundcap.errors import SourceError
from groundcap.sources.entry import Reader, SourceFile
from groundcap.sources.spec import split_options

HUB_PREFIX = "//datasets/"
OPTIONS = {"config": None, "split": "train", "image": "image", "license": None, "revision": None}


def _bytes_reader(data: bytes) -> Reader:
    return lambda limit: data[:limit]


def _url_reader(url: str) -> Reader:
    def read(limit: int) -> bytes:
        with fsspec.open(url, "rb") as fh:
            return fh.read(limit)

    return read


def _missing(limit: int) -> bytes:
    raise OSError("the image column is empty in this row")


def _image_reader(value) -> Reader:
    """Bytes of an undecoded image cell: ``{"bytes", "path"}``, raw bytes, or a path/URL string."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return _bytes_reader(value["bytes"])
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return _bytes_reader(bytes(value))
    if isinstance(value, str) and value:
        return _url_reader(value)
    return _missing


def _card_license(repo: str, hub: bool, revision: str | None) -> str | None:
    """The licence the dataset card's YAML states (``license``, or ``license_name`` for "other"), if any."""
    from huggingface_hub import DatasetCard, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if not hub and not (Path(repo) / "README.md").is_file():
        return None
    try:
        path = hf_hub_download(repo, "README.md", repo_type="dataset", revision=revision) if hub else \
            Path(repo) / "README.md"
        card = DatasetCard.load(path, repo_type="dataset")
    except (OSError, EntryNotFoundError, ValueError):  # no card, or none readable: no licence stated
        return None
    licence = card.data.get("license")
    if licence == "other" and card.data.get("license_name"):
        licence = card.data.get("license_name")
    if isinstance(licence, list):
        licence = ", ".join(str(x) for x in licence)
    return str(licence) if licence else None


def iter_hf_dataset(source: str, target: str) -> Iterator[SourceFile]:
    from datasets import Image, load_dataset  # heavy: only for this kind

    path, options = split_options(source, target, OPTIONS)
    hub = path.startswith(HUB_PREFIX)
    repo = path.removeprefix(HUB_PREFIX).strip("/") if hub else path
    if hub and repo.count("/") != 1:
        raise SourceError(f"source {source!r}: a Hub dataset is hf://datasets/ORG/NAME")
    split, column = options["split"], options["image"]
    try:
        ds = load_dataset(repo, options["config"], split=split, streaming=True, revision=options["revision"])
    except Exception as exc:  # datasets raises many types for a missing repo, config or split
        raise SourceError(f"source {source!r}: load_dataset failed: {type(exc).__name__}: {exc}") from None
    features = ds.features or {}
    if features and column not in features:
        raise SourceError(f"source {source!r}: no image column {column!r}; columns: {', '.join(features)} "
                          "(choose one with ?image=COLUMN)")
    if options["license"] and features and options["license"] not in features:
        raise SourceError(f"source {source!r}: no license column {options['license']!r}; "
                          f"columns: {', '.join(features)}")
    if isinstance(features.get(column), Image):
        ds = ds.cast_column(column, Image(decode=False))
    dataset_license = ds.info.license or _card_license(repo, hub, options["revision"])
    name = f"hf://datasets/{repo}" if hub else repo.rstrip("/")
    for index, row in enumerate(ds):
        licence = row.get(options["license"]) if options["license"] else None
        yield SourceFile(f"{name}/{split}/{index}", _image_reader(row.get(column)),
                         license=str(licence) if licence not in (None, "") else dataset_license)
