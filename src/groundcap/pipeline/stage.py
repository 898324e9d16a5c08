"""The stage contract every pipeline stage follows (docs/ARCHITECTURE.md, "The stage contract").

A stage declares what it reads (``inputs``: the ``work/<stage>`` folders; ``params``: the params keys;
``deps``: other files), what it writes (``outs``, ``metrics``, ``plots``), where its code lives
(its module, plus the backend modules of the ``steps`` it runs) and what the params sections it owns
may hold (``param_types``, ``check_params``). Those declarations are the single source of the
pipeline's shape: ``groundcap.pipeline.order`` orders the stages, ``dvc.yaml`` is generated from them
(``groundcap dvc-yaml``), a map stage's fingerprint covers exactly them (``groundcap.pipeline.resume``),
and ``params.validation`` checks the params against them when params load. A stage sees only the
params it declares, so a stage that reads an undeclared key fails at once instead of drifting out of
step with its DVC stage.

Global stages (ingest, dedup, split, build, card) implement ``run``. Map stages follow NeMo Curator's
lifecycle: ``setup`` once per worker (it loads the models), ``process_batch`` over a batch of images
(the default calls ``process`` per image), ``teardown`` after the stage (it lets go of the backends; the
runner frees the models, in one place, ``pipeline.runner.run_stage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from groundcap.params import subset
from groundcap.storage.remote import RemotePath


@dataclass
class Context:
    """Where a run reads and writes, and the params it runs with.

    ``store``, when set, is the shared work folder's URL (``s3://bucket/x``, docs/pipeline.md "Shared work
    folders"): map stages read and write their parts there, from whichever node runs them, and ``root`` is
    the driver's local mirror of it, where the global stages run (``storage.mirror``).
    """

    root: Path
    params: dict[str, Any]
    progress: bool = True
    store: str | None = None

    def work(self, stage: str) -> Path | RemotePath:
        if self.store:
            return RemotePath.at(self.store) / "work" / stage
        return self.root / "work" / stage

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def release(self) -> Path:
        return self.root / "release"

    def restricted(self, stage: Stage) -> Context:
        """The same run with only the params ``stage`` declares (and ``engine``)."""
        return Context(self.root, subset(self.params, (*stage.param_keys, "executor")), self.progress, self.store)

    def local(self) -> Context:
        """The same run on the local mirror alone (what a global stage sees)."""
        return Context(self.root, self.params, self.progress)


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs: CPUs and GPUs per Ray actor (GPUs may be a fraction)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class BackendSpec:
    """One backend a map stage runs: its step, registry name and options (from the stage's section)."""

    step: str
    name: str
    options: dict[str, Any]


class Stage:
    """A pipeline stage: its declarations, and ``run`` (a global stage overrides it)."""

    name: ClassVar[str]  # its place in the pipeline and its help: ``pipeline.order``
    inputs: ClassVar[tuple[str, ...]] = ()  # work/<stage> folders read
    param_keys: ClassVar[tuple[str, ...]] = ()  # params keys read: sections ("qa") or keys ("release.previous")
    deps: ClassVar[tuple[str, ...]] = ()  # other paths read, relative to the project (audits)
    steps: ClassVar[tuple[str, ...]] = ()  # annotator steps whose backends it runs (their code is its code)
    outs: ClassVar[tuple[str, ...]] = ()  # paths written, besides work/<name> for map stages
    metrics: ClassVar[tuple[str, ...]] = ()
    plots: ClassVar[tuple[str, ...]] = ()
    # the params sections it owns, each key's check (``params.validation``: Int, Backend, ...), e.g.
    # {"tag": {"merge_iou": Fraction(), ...}}; nested dicts are subsections
    param_types: ClassVar[dict[str, dict[str, Any]]] = {}

    def check_params(self, params: Mapping[str, Any], problems: list[str]) -> None:
        """Rules across keys of the sections it owns (each key's own type is in ``param_types``): one
        ``params: ...`` line appended to ``problems`` per problem. It runs on every load, after the type
        checks and even when they failed, so it may not assume that a key has its type."""

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def backends(self, params: dict[str, Any]) -> list[BackendSpec]:
        """The backends this stage runs under ``params`` (their versions and prompts join its fingerprint)."""
        return []


Row = dict[str, Any]
Records = tuple[Row, ...]  # one image's records, one per input stage, in the order of ``inputs``


class MapStage(Stage):
    """A stage that maps each image of its input parts to one row of ``schema``, part by part.

    ``process_batch`` may return an exception in place of a row: that image alone is recorded with
    the error (and retried on the next run). If ``process_batch`` raises, the worker runs the
    batch's images one at a time, so a failure still costs only the image that caused it.
    """

    schema: ClassVar[pa.Schema]
    # the columns it reads from an input, besides image_id and error (an input not named here: every column)
    columns: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    persist: ClassVar[bool] = True  # DVC keeps finished parts of an interrupted run (resume)
    stamps: list[dict[str, str]]  # provenance of the backends ``setup`` built

    def resources(self, params: dict[str, Any]) -> Resources:
        """CPUs per worker from ``executor.ray.num_cpus``; a GPU when a backend it runs is a GPU backend
        (``executor.ray.num_gpus.<stage>`` overrides)."""
        from groundcap.annotators import registry

        ray = params["executor"]["ray"]
        gpus = (ray.get("num_gpus") or {}).get(self.name)
        if gpus is None:
            infos = [(registry.info(b.step, b.name), b.options) for b in self.backends(params)]
            gpus = 1.0 if any(info.device == "gpu" and info.cls.uses_gpu(options) for info, options in infos) else 0.0
        return Resources(cpus=float(ray["num_cpus"]), gpus=float(gpus))

    def setup(self, params: dict[str, Any]) -> None:
        """Build the backends (load the models) once per worker."""
        self.stamps = []

    def process(self, *records: Row) -> Row:
        """One image's row from its records (one per input stage)."""
        raise NotImplementedError

    def process_batch(self, batch: list[Records]) -> list[Row | Exception]:
        """One row (or the exception it raised) per image of ``batch``, in order."""
        return [self.process(*records) for records in batch]

    def error_row(self, image_id: str, message: str) -> Row:
        """The row recorded for an image this stage (or an earlier one) failed on: derived from the
        schema (``error`` holds the message, lists are empty, the rest null)."""
        row: Row = {}
        for f in self.schema:
            if f.name == "image_id":
                row[f.name] = image_id
            elif f.name == "error":
                row[f.name] = message
            elif f.name == "provenance":
                row[f.name] = list(getattr(self, "stamps", []))
            else:
                row[f.name] = [] if pa.types.is_list(f.type) else None
        return row

    def finish(self, ctx: Context) -> None:
        """After every part is written (in the driver, whichever executor ran them): stage-wide reports."""

    def teardown(self) -> None:
        """Let go of this worker's backends; the runner then frees the models (``models.release``), keeping
        those the next stage reuses."""
        vars(self).clear()

    def reuses(self, params: dict[str, Any]) -> frozenset:
        """Keys (``groundcap.models``) of the models this stage's backends would load: the stage
        before it keeps those instead of freeing and reloading them (the scene captioner after the
        region captioner, same VLM, same engine options). Backends that can name their model without
        loading it say so with an ``engine_key`` class method."""
        from groundcap.annotators import registry

        keys = set()
        for b in self.backends(params):
            cls = registry.info(b.step, b.name).cls
            if hasattr(cls, "engine_key"):
                keys.add(cls.engine_key(b.options))
        return frozenset(keys)
