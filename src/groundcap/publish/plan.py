"""What a publish sends: a release that passed its checks, and the exact files it is made of.

Every check runs here, before any target is touched: a release that is not the version asked for,
that no longer matches its manifest or whose card is invalid is never published, since a published
version cannot be replaced.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from groundcap.errors import PublishError, ReleaseError  # noqa: F401 - PublishError is re-exported
from groundcap.releases import versions

CARD = "README.md"
_CHUNK = 1 << 20
_SHOWN_PROBLEMS = 10


@dataclass(frozen=True)
class Entry:
    path: str  # posix, relative to the release folder
    size: int
    sha256: str


@dataclass(frozen=True)
class Plan:
    release: Path
    version: str
    files: tuple[Entry, ...]  # the manifest's files, then the manifest itself: written last, it marks completion
    configs: tuple[str, ...]  # the configs the card declares

    @property
    def tag(self) -> str:
        return versions.tag(self.version)

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)


def sha256_stream(fh) -> str:
    """The sha256 of a binary file object, read in chunks (release shards can be large)."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def check_release(release: Path, version: str) -> Plan:
    """The plan for publishing ``release`` as ``version``; ReleaseError when it must not be."""
    # imported here: they pull in datasets and torch, which `groundcap --help` should not wait for
    from groundcap.builders.checksums import MANIFEST, verify_manifest
    from groundcap.dataset_card.card import validate_card

    versions.parse(version)
    built = versions.release_version(str(release))
    if built != version:
        raise ReleaseError(f"{release}/ was built as {built}, not {version}: "
                         "set release.version in params.yaml and rebuild")
    _refuse(f"{release}/ does not match its {MANIFEST}", verify_manifest(release))
    _refuse(f"{release}/{CARD} is not a valid dataset card", validate_card(release / CARD))
    return Plan(release=release, version=version, files=_files(release, MANIFEST), configs=_configs(release / CARD))


def _refuse(what: str, problems: list[str]) -> None:
    if problems:
        more = len(problems) - _SHOWN_PROBLEMS
        shown = "; ".join(problems[:_SHOWN_PROBLEMS]) + (f"; ... and {more} more" if more > 0 else "")
        raise ReleaseError(f"{what} ({shown}): rebuild with `dvc repro`")


def _files(release: Path, name: str) -> tuple[Entry, ...]:
    manifest = release / name
    listed = [Entry(e["path"], e["size"], e["sha256"]) for e in json.loads(manifest.read_text(encoding="utf-8"))]
    with open(manifest, "rb") as fh:
        itself = Entry(name, manifest.stat().st_size, sha256_stream(fh))
    return (*listed, itself)


def _configs(card: Path) -> tuple[str, ...]:
    from huggingface_hub import DatasetCard

    return tuple(config["config_name"] for config in DatasetCard.load(card).data.configs)


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def describe(plan: Plan, target: str) -> list[str]:
    """The dry-run listing: target, tag, every file with its size, the total."""
    width = max(len(human_size(entry.size)) for entry in plan.files)
    return [
        f"target  {target}",
        f"tag     {plan.tag}",
        f"files   {len(plan.files)}:",
        *(f"  {human_size(entry.size):>{width}}  {entry.path}" for entry in plan.files),
        f"  {human_size(plan.total_size):>{width}}  total ({plan.total_size} bytes)",
    ]


def loaded_rows(plan: Plan) -> dict[str, dict[str, int]]:
    """{config: {split: rows}} as ``datasets.load_dataset`` reads the release, in a throwaway cache."""
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="groundcap-publish-") as cache:
        return {
            config: {split: ds.num_rows for split, ds in datasets.load_dataset(
                str(plan.release), config, cache_dir=cache).items()}
            for config in plan.configs
        }


def usage(location: str, plan: Plan, revision: str | None = None) -> list[str]:
    """The ``load_dataset`` lines trainers copy, one per config."""
    pinned = f", revision={json.dumps(revision)}" if revision else ""
    return [
        f"load_dataset({json.dumps(location)}{'' if config == 'default' else ', ' + json.dumps(config)}{pinned})"
        for config in plan.configs
    ]
