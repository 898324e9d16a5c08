"""A Hugging Face dataset, streamed: ``hf://datasets/ORG/NAME`` on the Hub or ``hf:<folder>`` that
``datasets.load_dataset`` can read (Parquet, image folder, ...), with options
``?config=NAME&split=train&image=image&license=COLUMN&revision=REF``.

Rows come from ``load_dataset(..., streaming=True)``: nothing is downloaded first, rows arrive a
shard at a time. The image column is read undecoded (its bytes, or its path/URL). The licence of an
image is its ``license`` column when one is named, else the dataset's own licence when it states one
(``DatasetInfo.license``, or the ``license`` of its card's YAML).
The source path of a row is ``<dataset>/<split>/<row number>``.

The source policy bounds it as it bounds a list: a Hub dataset needs ``hf`` among its protocols (the
Hub is read with this machine's token), a local one must be a folder here (``load_dataset`` would
take any other name to the Hub), and an image cell that holds a path or URL is read as a list's line
is (``files.entry_file``), a local path only inside the dataset's own folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from groundcap.errors import SourceError
from groundcap.licenses import identify
from groundcap.sources import validate
from groundcap.sources.entry import Reader, SourceFile
from groundcap.sources.files import entry_file, listing
from groundcap.sources.policy import LOCAL, SourcePolicy, protocol_of
from groundcap.sources.spec import split_options
from groundcap.sources.webdataset import is_image

HUB_PREFIX = "//datasets/"
OPTIONS = {"config": None, "split": "train", "image": "image", "license": None, "revision": None}


def _bytes_reader(data: bytes) -> Reader:
    return lambda limit: data[:limit]


def _missing(limit: int) -> bytes:
    raise OSError("the image column is empty in this row")


def _image_file(name: str, value, policy: SourcePolicy, licence: str | None, folder: str | None) -> SourceFile:
    """The image of an undecoded cell: ``{"bytes", "path"}``, raw bytes, or a path/URL string. A local path
    is read only inside the dataset's ``folder`` (relative to it, links out refused), never for a Hub dataset
    (``folder`` None): a cell must not release this machine's files."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return SourceFile(name, _bytes_reader(value["bytes"]), license=licence)
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return SourceFile(name, _bytes_reader(bytes(value)), license=licence)
    if not isinstance(value, str) or not value:
        return SourceFile(name, _missing, license=licence)
    if protocol_of(value) == LOCAL:
        if folder is None:
            return SourceFile(name, refused="a local path in a Hub dataset's cell; never opened", license=licence)
        try:
            value = validate.confined(folder, value, policy)
        except validate.Invalid as exc:
            return SourceFile(name, refused=str(exc), license=licence)
    return entry_file(name, value, policy, license=licence)


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


def _check_folder(source: str, folder: str, policy: SourcePolicy) -> None:
    """Refuse a local dataset folder that would make ``load_dataset`` read what the policy refuses: a data
    file that is a FIFO (it would block) or a link out of the folder, or data files its card's ``configs``
    name outside it (``../x.parquet``, ``http://...``); ``load_dataset`` reads them itself, past :func:`fetch`.
    Images are not its to read: a refused one is its row's rejection (:func:`_image_file`)."""
    for rel, _, refused in listing(Path(folder), policy):
        if refused and not is_image(rel.name):
            raise SourceError(f"source {source!r}: {rel}: {refused}; load_dataset would open it")
    for path in _card_paths(Path(folder) / "README.md"):
        try:
            if not isinstance(path, str) or protocol_of(path) != LOCAL:
                raise validate.Invalid(f"{path!r}: not a path in the folder; never read")
            validate.confined(folder, path, policy)
        except validate.Invalid as exc:
            raise SourceError(f"source {source!r}: README.md configs: data files {exc}") from None


def _card_paths(card: Path) -> list:
    """Every ``data_files`` pattern and ``data_dir`` the ``configs`` of a dataset card name."""
    from huggingface_hub import metadata_load

    try:
        configs = (metadata_load(card) or {}).get("configs") if card.is_file() else None
    except Exception:  # a card YAML cannot parse: load_dataset refuses it with its own message
        return []
    paths = []
    for config in configs if isinstance(configs, list) else []:
        if isinstance(config, dict):
            files = config.get("data_files")
            for item in files if isinstance(files, list) else [files]:
                item = item.get("path") if isinstance(item, dict) else item
                paths += item if isinstance(item, list) else [item]
            paths.append(config.get("data_dir"))
    return [p for p in paths if p is not None]


def iter_hf_dataset(source: str, target: str, policy: SourcePolicy) -> Iterator[SourceFile]:
    """The rows' images; a Hub dataset the policy does not allow, or a local one that is not a folder here,
    refuses the source before any read."""
    path, options = split_options(source, target, OPTIONS)
    hub = path.startswith(HUB_PREFIX)
    repo = path.removeprefix(HUB_PREFIX).strip("/") if hub else path
    if hub and repo.count("/") != 1:
        raise SourceError(f"source {source!r}: a Hub dataset is hf://datasets/ORG/NAME")
    policy.require(source, [f"hf:{path}" if hub else path])
    if not hub and not Path(path).is_dir():
        raise SourceError(f"source {source!r}: {path} is no folder here (a Hub dataset is hf://datasets/ORG/NAME)")
    if not hub:
        _check_folder(source, path, policy)
    return _rows(source, repo, hub, options, policy)


def _rows(source: str, repo: str, hub: bool, options: dict, policy: SourcePolicy) -> Iterator[SourceFile]:
    from datasets import Image, load_dataset  # heavy: only for this kind

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
    dataset_license = identify(ds.info.license or _card_license(repo, hub, options["revision"]))
    name = f"hf://datasets/{repo}" if hub else repo.rstrip("/")
    for index, row in enumerate(ds):
        licence = row.get(options["license"]) if options["license"] else None
        yield _image_file(f"{name}/{split}/{index}", row.get(column), policy,
                          identify(str(licence)) if licence not in (None, "") else dataset_license,
                          None if hub else repo)
