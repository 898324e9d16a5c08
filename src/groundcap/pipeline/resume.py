"""Which parts of a map stage are finished, so a re-run (after a crash, a kill, a pre-empted node, a
params or code change elsewhere) skips them.

A part's marker (``parts.write_part``) records the part's SHA-256 and, for a map stage, the
*fingerprint* it was computed from. The fingerprint covers exactly what can change the part's
bytes: the params the stage declares (never ``engine``, so a run begun locally can be resumed on
Ray), the versions and prompt hashes of the backends it runs, the code it depends on
(``code_deps``: its module's imports, its steps' backends; not the card's or the builders' code)
and the SHA-256 of each input part (read from the inputs' own markers, so nothing is re-hashed).
A part is finished when its marker's fingerprint is the current one and none of its images holds
an error of this stage that has been tried fewer than ``executor.max_attempts`` times; such errors
are retried on the next run, the image's other rows kept as they are. Errors carried from an
earlier stage are not retried here.

``plan`` decides this once per stage, in the driver: the workers get ``Task`` s and read no marker.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from groundcap.annotators import registry
from groundcap.errors import StageInputError
from groundcap.params import subset
from groundcap.pipeline import code_deps
from groundcap.pipeline.stage import Context, MapStage
from groundcap.storage import atomic, parts

MARKER_READERS = 16


def stage_digest(stage: MapStage, params: dict) -> str:
    """What a stage's parts depend on besides their input parts: its declared params, its backends'
    versions and prompts, and its code."""
    backends = [registry.info(b.step, b.name).cls.fingerprint(b.options) for b in stage.backends(params)]
    blob = json.dumps({"params": subset(params, stage.param_keys), "backends": backends,
                       "code": code_deps.digest(code_deps.stage_files(stage))}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def input_markers(inputs: list[parts.Folder], index: int) -> list[dict]:
    """The markers of part ``index`` of each input folder; an unfinished one is an error."""
    markers = []
    for directory in inputs:
        marker = parts.read_marker(directory, index)
        if marker is None:
            raise StageInputError(f"part {index} of {directory} is not finished; rerun the stage that writes it")
        markers.append(marker)
    return markers


def fingerprint(digest: str, markers: list[dict]) -> str:
    """A part's fingerprint: the stage's ``digest`` and the SHA-256 of its input parts (their ``markers``)."""
    shas = [marker["sha256"] for marker in markers]
    return hashlib.sha256(json.dumps({"stage": digest, "inputs": shas}).encode()).hexdigest()


def retries(directory: parts.Folder, index: int, fingerprint: str) -> dict[str, int] | None:
    """``image_id -> attempts so far`` of the errors to retry in a part computed from ``fingerprint``,
    or None when the part must be computed whole (missing, or computed from other inputs or params)."""
    marker = parts.read_marker(directory, index)
    if marker is None or marker.get("fingerprint") != fingerprint or not parts.part_path(directory, index).is_file():
        return None
    return marker.get("errors", {})


def clean(directory: parts.Folder, keep: set[int]) -> None:
    """Remove temporary files a killed run left, and parts (with markers) whose input parts are gone."""
    for path in directory.iterdir():
        index = parts.part_index(path.name)
        if atomic.is_temporary(path) or (index is not None and index not in keep):
            path.unlink()


@dataclass(frozen=True)
class Task:
    """One part for a worker to write: computed from ``fingerprint``, whole (``retries`` None) or only its
    images whose errors are to be retried (``retries``: image id -> attempts so far)."""

    index: int
    fingerprint: str
    retries: dict[str, int] | None
    images: int  # the part's images, for progress


def plan(ctx: Context, stage: MapStage) -> tuple[list[int], list[Task]]:
    """Every part index of ``stage`` (its first input's), and the tasks for those not finished, after
    removing what a killed run left (``clean``). The markers are read by ``MARKER_READERS`` threads: on NFS
    or object storage each read is a round trip, and a million images are tens of thousands of parts."""
    out = ctx.work(stage.name)
    out.mkdir(parents=True, exist_ok=True)
    sources = [ctx.work(s) for s in stage.inputs]
    indices = parts.list_parts(sources[0])
    clean(out, set(indices))
    attempts = int(ctx.params["executor"]["max_attempts"])
    digest = stage_digest(stage, ctx.params)

    def task(index: int) -> Task | None:
        markers = input_markers(sources, index)
        print_ = fingerprint(digest, markers)
        pending = retries(out, index, print_)
        if pending is None or any(n < attempts for n in pending.values()):
            return Task(index, print_, pending, parts.num_rows(sources[0], index, markers[0]))
        return None

    with ThreadPoolExecutor(MARKER_READERS) as pool:
        tasks = [t for t in pool.map(task, indices) if t is not None]
    return indices, tasks
