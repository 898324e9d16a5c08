"""Which parts of a map stage are finished, so a re-run (after a crash, a kill, a pre-empted node) skips them.

A part's marker (``parts.write_part``) records the part's SHA-256 and, for a map stage, the
*fingerprint* it was computed from: the params (all but ``engine``, so a run begun locally can be
resumed on Ray), groundcap's own files and the SHA-256 of each input part (read from the inputs'
own markers, so nothing is re-hashed). A part is finished when its
marker's fingerprint is the current one and none of its images holds an error of this stage that
has been tried fewer than ``engine.max_attempts`` times; such errors are retried on the next run,
the image's other rows kept as they are. Errors carried from an earlier stage are not retried here.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import groundcap
from groundcap import parts
from groundcap.errors import StageInputError
from groundcap.params import content


@functools.cache
def code_digest() -> str:
    """SHA-256 over groundcap's own files (code, defaults, prompts): a code change redoes every part,
    as DVC reruns a stage whose dependency ``src/groundcap`` changed."""
    package = Path(groundcap.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".yaml", ".txt") and p.is_file()):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def fingerprint(params: dict, inputs: list[Path], index: int) -> str:
    shas = []
    for directory in inputs:
        marker = parts.read_marker(directory, index)
        if marker is None:
            raise StageInputError(f"part {index} of {directory} is not finished; rerun the stage that writes it")
        shas.append(marker["sha256"])
    blob = json.dumps({"params": content(params), "code": code_digest(), "inputs": shas}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def retries(directory: Path, index: int, fingerprint: str) -> dict[str, int] | None:
    """``image_id -> attempts so far`` of the errors to retry in a part computed from ``fingerprint``,
    or None when the part must be computed whole (missing, or computed from other inputs or params)."""
    marker = parts.read_marker(directory, index)
    if marker is None or marker.get("fingerprint") != fingerprint or not parts.part_path(directory, index).is_file():
        return None
    return marker.get("errors", {})


def finished(directory: Path, index: int, fingerprint: str, max_attempts: int) -> bool:
    pending = retries(directory, index, fingerprint)
    return pending is not None and all(n >= max_attempts for n in pending.values())


def clean(directory: Path, keep: set[int]) -> None:
    """Remove temporary files a killed run left, and parts (with markers) whose input parts are gone."""
    for path in Path(directory).iterdir():
        stale = path.name.startswith(".") and path.name.endswith(".tmp")
        if stale or (path.name.startswith("part-") and int(path.name[5:10]) not in keep):
            path.unlink()
