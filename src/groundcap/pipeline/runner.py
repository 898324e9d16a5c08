"""Runs stages: a global stage's ``run``, or a map stage over the parts not yet finished, on the
executor ``executor.kind`` names; then frees the stage's models before the next one loads its own.

Every stage sees only the params it declares (``Context.restricted``). What each stage did is
returned (``Report``): ``groundcap run`` prints it, so a re-run shows which parts were computed.

With a shared work folder (``Context.store``) a global stage runs on the driver's mirror, pulled from the
store before it, and what it declares it writes (``outs``, ``metrics``, ``plots``) is pushed after it
(``storage.mirror``); a map stage's workers write their parts to the store themselves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from groundcap import models
from groundcap.builders.checksums import MANIFEST
from groundcap.params import subset
from groundcap.pipeline import executors, order, resume
from groundcap.pipeline.stage import Context, MapStage, Stage
from groundcap.storage import mirror
from groundcap.storage.remote import RemotePath


@dataclass(frozen=True)
class Report:
    stage: str
    seconds: float
    parts: int | None = None  # a map stage's parts, and how many of them were computed now
    computed: int | None = None

    def line(self) -> str:
        done = "" if self.parts is None else f", {self.computed} of {self.parts} parts computed"
        return f"{self.stage:<16} {self.seconds:7.1f} s{done}"


def map_stage(ctx: Context, stage: MapStage) -> tuple[int, int]:
    """Write ``work/<stage>``: every part not already finished; (parts, parts computed).

    ``resume.plan`` decides which parts to compute, once: those whose marker was written from another
    fingerprint, or that hold errors of this stage to retry (only those images are computed again).
    """
    indices, tasks = resume.plan(ctx, stage)
    if tasks:
        executors.run(ctx, stage, tasks)
        resume.clean(ctx.work(stage.name), set(indices))  # what a worker lost mid-write left (its part was redone)
    stage.finish(ctx)
    return len(indices), len(tasks)


def run_stage(ctx: Context, stage: Stage, keep: frozenset = frozenset()) -> Report:
    """Run one stage with the params it declares; free every model but ``keep`` after it (the one place models
    are freed: ``MapStage.teardown`` only lets go of the stage's backends)."""
    ctx = ctx.restricted(stage)
    start = time.perf_counter()
    try:
        if isinstance(stage, MapStage):
            total, computed = map_stage(ctx, stage)
            _push(ctx, stage)
            return Report(stage.name, time.perf_counter() - start, total, computed)
        if ctx.store:
            mirror.pull(RemotePath.at(ctx.store), ctx.root)
        stage.run(ctx.local())
        _push(ctx, stage)
        return Report(stage.name, time.perf_counter() - start)
    finally:
        models.release(keep)


def _push(ctx: Context, stage: Stage) -> None:
    """Send what ``stage`` wrote on the driver to the shared work folder, if there is one."""
    if ctx.store:
        mirror.push(ctx.root, RemotePath.at(ctx.store), [*stage.outs, *stage.metrics, *stage.plots], last=(MANIFEST,))


def run_all(ctx: Context, names: tuple[str, ...] | None = None) -> list[Report]:
    """Run the stages ``names`` (default: all) in pipeline order; a stage keeps the models the next one reuses."""
    chosen = list(order.stages()) if names is None else [order.stage(name) for name in names]
    reports = []
    for stage, following in zip(chosen, [*chosen[1:], None], strict=True):
        keep = following.reuses(subset(ctx.params, (*following.param_keys, "executor"))) \
            if isinstance(following, MapStage) else frozenset()
        reports.append(run_stage(ctx, stage, keep))
    return reports
