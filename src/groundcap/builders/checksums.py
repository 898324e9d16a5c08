"""The release's checksum manifest: what was built, so a download or a rebuild can be verified.

``checksums.json`` is a sorted list of ``{path, size, sha256}`` (posix paths relative to the release
folder) of every file there but itself and dotfiles. Write it last, after the card, so README.md is covered; two
builds from the same inputs must produce byte-identical manifests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from groundcap.storage import atomic

MANIFEST = "checksums.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(release_dir: Path) -> list[str]:
    return sorted(
        rel.as_posix()
        for p in release_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST and not _hidden(rel := p.relative_to(release_dir))
    )


def _hidden(rel: Path) -> bool:
    """Dotfiles are not part of a release: temporary files, and the .gitignore DVC writes beside its outputs."""
    return any(part.startswith(".") for part in rel.parts)


def write_manifest(release_dir: str | Path) -> Path:
    release_dir = Path(release_dir)
    entries = [
        {"path": rel, "size": (release_dir / rel).stat().st_size, "sha256": _sha256(release_dir / rel)}
        for rel in _files(release_dir)
    ]
    return atomic.write_text(release_dir / MANIFEST, json.dumps(entries, indent=1) + "\n")


def verify_manifest(release_dir: str | Path) -> list[str]:
    """Problems found (missing, extra or changed files); empty when the folder matches its manifest."""
    release_dir = Path(release_dir)
    path = release_dir / MANIFEST
    if not path.is_file():
        return [f"{MANIFEST} is missing"]
    expected = {entry["path"]: entry for entry in json.loads(path.read_text(encoding="utf-8"))}
    actual = set(_files(release_dir))
    problems = [f"missing: {rel}" for rel in sorted(expected.keys() - actual)]
    problems += [f"not in manifest: {rel}" for rel in sorted(actual - expected.keys())]
    for rel in sorted(expected.keys() & actual):
        file = release_dir / rel
        if file.stat().st_size != expected[rel]["size"]:
            problems.append(f"size differs: {rel}")
        elif _sha256(file) != expected[rel]["sha256"]:
            problems.append(f"sha256 differs: {rel}")
    return problems
