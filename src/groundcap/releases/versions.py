"""Release versions: semantic version numbers, their tags, and the changelog every release carries.

A release folder holds ``changelog.json``: a list of entries, oldest first, the last one describing
the release itself (``version``, ``previous`` version or null, image counts and what changed since
``previous``). Publishing tags a release ``v{version}``; a published tag is never moved or reused,
so a later release needs a higher version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import fsspec

from groundcap.errors import ReleaseError
from groundcap.releases import diff
from groundcap.storage import atomic

CHANGELOG = "changelog.json"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")


def parse(version: str) -> tuple:
    """A sortable key of a semantic version ``MAJOR.MINOR.PATCH[-PRERELEASE]``; ValueError otherwise.

    A pre-release sorts before its release (``1.0.0-rc.1 < 1.0.0``); pre-release identifiers compare
    numerically when numeric, as semver.org says.
    """
    match = _SEMVER.match(str(version))
    if not match:
        raise ReleaseError(f"release version {version!r} is not a semantic version MAJOR.MINOR.PATCH (e.g. 1.2.0)")
    core = tuple(int(match.group(i)) for i in (1, 2, 3))
    if match.group(4) is None:
        return (*core, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in match.group(4).split("."))
    return (*core, 0, ids)


def tag(version: str) -> str:
    """The git tag of a release version (``1.2.0`` -> ``v1.2.0``), what ``load_dataset(revision=...)`` takes."""
    parse(version)
    return f"v{version}"


def check_follows(version: str, previous: str | None) -> None:
    """Refuse a version that does not come after the one it follows (a published tag is never reused)."""
    if previous is not None and parse(version) <= parse(previous):
        raise ReleaseError(f"release.version {version} must be higher than the previous release's {previous}; "
                         "bump it in params.yaml")


def read_changelog(release: str) -> list[dict]:
    """The changelog of a release folder or fsspec URL (``hf://datasets/org/name@v1.0.0`` works too)."""
    url = f"{str(release).rstrip('/')}/{CHANGELOG}"
    try:
        with fsspec.open(url, "r", encoding="utf-8") as fh:
            entries = json.load(fh)
    except FileNotFoundError:
        raise ReleaseError(
            f"{url} not found: {release} is not a groundcap release (built by `groundcap card`)") from None
    if not isinstance(entries, list) or not entries or "version" not in entries[-1]:
        raise ReleaseError(f"{url} is not a groundcap changelog (a non-empty list of entries with a version)")
    return entries


def release_version(release: str) -> str:
    """The version a release folder was built as (the last entry of its changelog)."""
    return str(read_changelog(release)[-1]["version"])


def changelog(release_dir: str, release: dict) -> list[dict]:
    """The changelog of the release being built: the previous release's entries, then this version's.

    This version's entry counts its images per split and, when ``release.previous`` names the
    release it follows, how many images were added, removed, changed or moved since then.
    """
    version = str(release["version"])
    parse(version)
    current = diff.index(release_dir)
    entry = {"version": version, "previous": None, "images": diff.split_counts(current)}
    history: list[dict] = []
    if previous := release.get("previous"):
        history = read_changelog(previous)
        entry["previous"] = str(history[-1]["version"])
        check_follows(version, entry["previous"])
        entry.update(diff.compare(diff.index(previous), current).counts())
    return [*history, entry]


def write_changelog(release_dir: str | Path, entries: list[dict]) -> Path:
    return atomic.write_text(Path(release_dir) / CHANGELOG, json.dumps(entries, indent=1, sort_keys=True) + "\n")
