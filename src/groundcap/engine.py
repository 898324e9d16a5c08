"""Runs a stage's per-image function over Parquet parts, resumably, on the executor params choose.

Part ``k`` of each input stage is read together (they hold the same images in the same order), the
function runs once per image, and part ``k`` of the output is written atomically, its completion
marker last (``resume``). An exception on one image becomes that image's ``error`` field instead of
ending the run, later stages carry that error forward, and QA fails the image with it as the
reason: one bad sample never costs the others. Where parts run is ``executors``' business; what a
part holds is decided here only, so every executor writes the same bytes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from groundcap import parts, resume
from groundcap.errors import StageInputError


@dataclass
class Context:
    """Where a run reads and writes, and the params it runs with."""

    root: Path
    params: dict[str, Any]
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def work(self, stage: str) -> Path:
        return self.root / "work" / stage

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def release(self) -> Path:
        return self.root / "release"


ImageFn = Callable[..., dict]
OnError = Callable[[str, str], dict]


@dataclass(frozen=True)
class MapStage:
    """A stage that maps each image of its input parts to one output row.

    ``setup(params)`` builds ``(fn, on_error)`` once per worker (it loads the models): ``fn(*rows)``
    gets the image's records from each input stage, in the order of ``inputs``; ``on_error(image_id,
    message)`` builds the row recorded when ``fn`` raises. Declared at module level, so a worker
    process or a Ray actor rebuilds it by reference.
    """

    name: str
    inputs: tuple[str, ...]
    schema: pa.Schema
    setup: Callable[[dict], tuple[ImageFn, OnError]]


class PartWorker:
    """Computes whole parts of one map stage: one ``setup`` (one model load) per worker, many parts."""

    def __init__(self, root: str | Path, params: dict, stage: MapStage):
        self.root, self.params, self.stage = Path(root), params, stage
        self.fn, self.on_error = stage.setup(params)
        self.max_attempts = int(params["engine"]["max_attempts"])

    def __call__(self, index: int, fingerprint: str) -> int:
        """Write part ``index`` and its marker; the number of images in it."""
        stage, out = self.stage, self.root / "work" / self.stage.name
        tables = [parts.read_part(self.root / "work" / s, index) for s in stage.inputs]
        pending = resume.retries(out, index, fingerprint)
        done = {r["image_id"]: r for r in parts.read_part(out, index)} if pending is not None else {}
        rows, errors = [], {}
        for records in zip(*tables, strict=True):
            ids = {r["image_id"] for r in records}
            if len(ids) != 1:
                raise StageInputError(f"part {index} of {stage.inputs} is out of step ({sorted(ids)}); rerun from ingest")
            image_id = records[0]["image_id"]
            upstream = next((r["error"] for r in records if r.get("error")), None)
            if upstream:  # an earlier stage already failed on this image: carry its reason
                rows.append(self.on_error(image_id, upstream))
                continue
            attempts = (pending or {}).get(image_id, 0)
            if image_id in done and (image_id not in pending or attempts >= self.max_attempts):
                rows.append(done[image_id])  # finished, or out of attempts: kept as it is
                if image_id in pending:
                    errors[image_id] = attempts
                continue
            try:
                rows.append(self.fn(*records))
            except Exception as exc:  # recorded per image, see module docstring
                detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
                rows.append(self.on_error(image_id, f"{stage.name}: {detail}"))
                errors[image_id] = attempts + 1
        parts.write_part(rows, stage.schema, out, index, {"fingerprint": fingerprint, "errors": errors})
        return len(rows)


def map_stage(ctx: Context, stage: MapStage) -> Path:
    """Write ``work/<stage>``: every part not already finished, on the executor ``engine.kind`` names.

    Parts whose marker says they were computed from the same params and inputs are skipped; the
    others are computed whole, or only their images whose error is to be retried (``resume``).
    """
    from groundcap import executors

    out = ctx.work(stage.name)
    out.mkdir(parents=True, exist_ok=True)
    sources = [ctx.work(s) for s in stage.inputs]
    indices = parts.list_parts(sources[0])
    resume.clean(out, set(indices))
    attempts = int(ctx.params["engine"]["max_attempts"])
    prints = {i: resume.fingerprint(ctx.params, sources, i) for i in indices}
    todo = [i for i in indices if not resume.finished(out, i, prints[i], attempts)]
    if todo:
        images = sum(pq.ParquetFile(parts.part_path(sources[0], i)).metadata.num_rows for i in todo)
        executors.run(ctx, stage, {i: prints[i] for i in todo}, images)
    return out
