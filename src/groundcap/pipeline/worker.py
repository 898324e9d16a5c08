"""Computes whole parts of one map stage; what a part holds is decided here only, so every executor
(``executors``) writes the same bytes.

A worker gets ``resume.Task`` s: which part, from which fingerprint, and which images' errors to retry
(the driver planned them). Part ``k`` of each input stage is read together (they hold the same images in
the same order; only the columns the stage declares in ``MapStage.columns``, plus ``image_id`` and
``error``), the images to compute are handed to the stage in batches (``executor.batch_images``; 0: the whole part),
and part ``k`` of the output is written atomically, its completion marker last (``parts``,
``resume``). An exception on one image becomes that image's ``error`` field instead of ending the
run; later stages carry that error forward and QA fails the image with it as the reason: one bad
sample never costs the others. A dead engine (``errors.is_fatal``: vLLM's engine core gone, CUDA out
of memory, an engine that failed to start) is the exception: it stops the stage as ``errors.EngineDead``,
the parts already written stay, and the next run resumes.
"""

from __future__ import annotations

import traceback

from groundcap.annotators.registry import cuda_available
from groundcap.errors import BackendUnavailable, EngineDead, EngineStartFailed, StageInputError, is_fatal
from groundcap.pipeline import resume
from groundcap.pipeline.stage import Context, MapStage, Records, Row
from groundcap.sources.reference import read_part
from groundcap.storage import parts


def _message(stage: str, exc: BaseException) -> str:
    return f"{stage}: {traceback.format_exception_only(type(exc), exc)[-1].strip()}"


class PartWorker:
    """One ``setup`` (one model load) per worker, then many parts of one map stage: the ``stage`` object
    this process was given (the runner's own in process, a pickled copy in a spawned process or a Ray
    actor), set up once."""

    def __init__(self, ctx: Context, stage: MapStage):
        self.ctx, self.stage = ctx, stage
        params = ctx.params
        if params["executor"]["require_gpu"] and stage.resources(params).gpus and not cuda_available():
            raise BackendUnavailable(
                f"{self.stage.name} runs GPU backends and executor.require_gpu is set, but no CUDA device is "
                "visible here (a Ray actor without num_gpus sees none): run it on a GPU node, or set "
                "executor.require_gpu: false to run on the CPU (about 100x slower)")
        stage.setup(params)
        self.max_attempts = int(params["executor"]["max_attempts"])
        self.batch_images = int(params["executor"]["batch_images"])

    def __call__(self, task: resume.Task) -> int:
        """Write the task's part and its marker; the number of images in it."""
        stage, out, index, pending = self.stage, self.ctx.work(self.stage.name), task.index, task.retries
        tables = [self._read(name, index) for name in stage.inputs]
        done = {r["image_id"]: r for r in parts.read_part(out, index)} if pending is not None else {}
        rows: list[Row | None] = []
        todo: list[tuple[int, Records, int]] = []  # (position, records, attempts so far)
        errors: dict[str, int] = {}
        for records in zip(*tables, strict=True):
            ids = {r["image_id"] for r in records}
            if len(ids) != 1:
                raise StageInputError(f"part {index} of {stage.inputs} is out of step ({sorted(ids)}); "
                                      "rerun from ingest")
            image_id = records[0]["image_id"]
            upstream = next((r["error"] for r in records if r.get("error")), None)
            attempts = (pending or {}).get(image_id, 0)
            if upstream:  # an earlier stage already failed on this image: carry its reason
                rows.append(stage.error_row(image_id, upstream))
            elif image_id in done and (image_id not in pending or attempts >= self.max_attempts):
                rows.append(done[image_id])  # finished, or out of attempts: kept as it is
                if image_id in pending:
                    errors[image_id] = attempts
            else:
                todo.append((len(rows), records, attempts))
                rows.append(None)
        size = self.batch_images or len(todo) or 1
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            for (position, records, attempts), result in zip(batch, self._compute([r for _, r, _ in batch]),
                                                             strict=True):
                if isinstance(result, Exception):
                    image_id = records[0]["image_id"]
                    rows[position] = stage.error_row(image_id, _message(stage.name, result))
                    errors[image_id] = attempts + 1
                else:
                    rows[position] = result
        parts.write_part(rows, stage.schema, out, index, {"fingerprint": task.fingerprint, "errors": errors})
        return len(rows)

    def _read(self, name: str, index: int) -> list[Row]:
        """Part ``index`` of input ``name``: the columns the stage reads from it, else every one; an image ingest
        kept as a reference comes with its bytes, read from its source (``sources.reference``)."""
        directory, wanted = self.ctx.work(name), self.stage.columns.get(name)
        if wanted is not None:
            error = ["error"] if "error" in parts.column_names(directory, index) else []  # ingest's table has none
            wanted = ["image_id", *wanted, *error]
        return read_part(directory, index, wanted, self.ctx.root).to_pylist()

    def _compute(self, batch: list[Records]) -> list[Row | Exception]:
        """The stage's rows for ``batch``; when the batch raises, its images one at a time."""
        try:
            results = self.stage.process_batch(batch)
        except Exception as exc:  # recorded per image, see module docstring
            if is_fatal(exc):
                raise self._dead(exc) from exc
            if len(batch) == 1:
                return [exc]
            return [result for records in batch for result in self._compute([records])]
        if len(results) != len(batch):
            raise RuntimeError(f"{self.stage.name} returned {len(results)} rows for {len(batch)} images")
        if dead := next((r for r in results if isinstance(r, Exception) and is_fatal(r)), None):
            raise self._dead(dead) from dead
        return results

    def _dead(self, exc: Exception) -> EngineDead:
        if isinstance(exc, EngineDead) and not isinstance(exc, EngineStartFailed):  # it said what to do (restart
            return EngineDead(f"{self.stage.name}: {exc}; the finished parts are kept: run again to resume")
        what = "failed to start" if isinstance(exc, EngineStartFailed) else "died"
        return EngineDead(f"{self.stage.name}: the model engine {what} ({type(exc).__name__}: {exc}); the finished "
                          "parts are kept: free the GPU (or lower gpu_memory_utilization or executor.batch_images) "
                          "and run again to resume")
