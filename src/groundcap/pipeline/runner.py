"""Runs stages: a global stage's ``run``, or a map stage over the parts not yet finished, on the
executor ``engine.kind`` names; then frees the stage's models before the next one loads its own.

Every stage sees only the params it declares (``Context.restricted``). What each stage did is
returned (``Report``): ``groundcap run`` prints it, so a re-run shows which parts were computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow.parquet as pq

from groundcap import models
from groundcap.params import subset
from groundcap.pipeline import executors, order, resume
from groundcap.pipeline.stage import Context, MapStage, Stage
from groundcap.storage import parts


@dataclass(frozen=True)
class Report:
    stage: str
    seconds: float
    parts: int | None = None  # a map stage's parts, and how many of them were computed now
    computed: int | None = None

    def line(self) -> str:
        done = "" if self.parts is None else f", {self.computed} of {self.parts} parts computed"
        return f"{self.stage:<16} {self.seconds:7.1f} s{done}"


def map_stage(ctx: Context, stage: MapStage, keep: frozenset = frozenset()) -> tuple[int, int]:
    """Write ``work/<stage>``: every part not already finished; (parts, parts computed).

    Parts whose marker says they were computed from the same fingerprint are skipped; the others are
    computed whole, or only their images whose error is to be retried (``resume``).
    """
    out = ctx.work(stage.name)
    out.mkdir(parents=True, exist_ok=True)
    sources = [ctx.work(s) for s in stage.inputs]
    indices = parts.list_parts(sources[0])
    resume.clean(out, set(indices))
    attempts = int(ctx.params["engine"]["max_attempts"])
    digest = resume.stage_digest(stage, ctx.params)
    prints = {i: resume.fingerprint(digest, sources, i) for i in indices}
    todo = [i for i in indices if not resume.finished(out, i, prints[i], attempts)]
    if todo:
        images = sum(pq.ParquetFile(parts.part_path(sources[0], i)).metadata.num_rows for i in todo)
        executors.run(ctx, type(stage), {i: prints[i] for i in todo}, images, keep)
    stage.finish(ctx)
    return len(indices), len(todo)


def run_stage(ctx: Context, stage: Stage, keep: frozenset = frozenset()) -> Report:
    """Run one stage with the params it declares; free every model but ``keep`` after it."""
    ctx = ctx.restricted(stage)
    start = time.perf_counter()
    try:
        if isinstance(stage, MapStage):
            total, computed = map_stage(ctx, stage, keep)
            return Report(stage.name, time.perf_counter() - start, total, computed)
        stage.run(ctx)
        return Report(stage.name, time.perf_counter() - start)
    finally:
        models.release(keep)


def run_all(ctx: Context, names: tuple[str, ...] | None = None) -> list[Report]:
    """Run the stages ``names`` (default: all) in pipeline order; a stage keeps the models the next one reuses."""
    chosen = list(order.stages()) if names is None else [order.stage(name) for name in names]
    reports = []
    for stage, following in zip(chosen, [*chosen[1:], None], strict=True):
        keep = following.reuses(subset(ctx.params, (*following.params, "engine"))) \
            if isinstance(following, MapStage) else frozenset()
        reports.append(run_stage(ctx, stage, keep))
    return reports
