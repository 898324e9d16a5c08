"""Where a map stage's parts run: in this process, in local worker processes, or on a Ray cluster.

``executor.kind`` picks one. Each runs the same ``worker.PartWorker`` (one ``setup``, so one model
load, per worker) over the parts to do, and each part is written by its worker, so the executor
changes where and how fast, never what is written. Progress is counted in images (items/s, ETA).

- ``local`` with ``executor.workers: 1`` runs in this process (and tears the stage down after it);
  more workers are spawned processes, whose models go with them.
- ``ray`` runs ``ray.data`` over the part indices with ``map_batches`` on a fixed actor pool of
  ``executor.ray.actors`` actors, each with the stage's declared resources (``MapStage.resources``:
  ``num_cpus``, and ``num_gpus`` when it runs GPU backends); ``executor.ray.address`` joins a running
  cluster (null: start a local one). Workers read and write ``work/`` directly, so on several nodes
  it must be a shared filesystem, at the same absolute path. A lost node's actors are restarted
  elsewhere and their parts retried (Ray Data's defaults: no limit), so the stage ends without it.

Every worker process and Ray actor imports ``groundcap`` before its first part (to unpickle its worker), and
with it the NVML-based CUDA check (``groundcap/__init__.py``): its CUDA check leaves CUDA uninitialised, so a
vLLM engine it starts can still fork its engine core (spawned workers inherit the variable besides).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context

from tqdm.auto import tqdm

from groundcap.errors import BackendUnavailable
from groundcap.pipeline.resume import Task
from groundcap.pipeline.stage import Context, MapStage
from groundcap.pipeline.worker import PartWorker

KINDS = ("local", "ray")


def run(ctx: Context, stage: MapStage, tasks: list[Task]) -> None:
    """Write the parts ``tasks`` name (``resume.plan``) of ``stage``, counting their images as they finish."""
    executor = ctx.params["executor"]  # executor.kind and the counts are checked when params load (params.validation)
    with tqdm(total=sum(t.images for t in tasks), desc=stage.name, unit="img", disable=not ctx.progress) as bar:
        if executor["kind"] == "ray":
            _on_ray(ctx, stage, tasks, bar)
        elif int(executor["workers"]) > 1:
            _in_processes(ctx, stage, tasks, bar, int(executor["workers"]))
        else:
            worker = PartWorker(ctx, stage)
            try:
                for task in tasks:
                    bar.update(worker(task))
            finally:
                stage.teardown()


_worker: PartWorker | None = None  # one per worker process


def _start(ctx: Context, stage: MapStage) -> None:
    global _worker
    _worker = PartWorker(ctx, stage)


def _part(task: Task) -> int:
    return _worker(task)


def _in_processes(ctx: Context, stage: MapStage, tasks: list[Task], bar, workers: int) -> None:
    # spawn, not fork: a forked copy of a process holding model threads (torch, onnxruntime) can deadlock
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=get_context("spawn"), initializer=_start,
                             initargs=(ctx, stage)) as pool:
        for future in as_completed([pool.submit(_part, task) for task in tasks]):
            bar.update(future.result())


class _RayParts:
    """A Ray Data actor: a PartWorker built once, fed part indices one batch (one part) at a time."""

    def __init__(self, ctx: Context, stage: MapStage, tasks: dict[int, Task]):
        self.worker, self.tasks = PartWorker(ctx, stage), tasks

    def __call__(self, batch: dict) -> dict:
        return {"index": batch["index"], "images": [self.worker(self.tasks[int(i)]) for i in batch["index"]]}


def actor_pool(stage: str, actors: int, parts: int, gpus_per_actor: float, cluster_gpus: float) -> int:
    """How many actors to start: ``executor.ray.actors``, no more than there are parts, and no more than the
    cluster's GPUs can hold (an actor Ray cannot place would wait forever, and with it the stage)."""
    size = min(actors, parts)
    if gpus_per_actor:
        if cluster_gpus < gpus_per_actor:
            raise BackendUnavailable(
                f"stage {stage} runs GPU backends ({gpus_per_actor:g} GPU per actor) but the Ray cluster has "
                f"{cluster_gpus:g} GPUs: join a cluster with GPUs (executor.ray.address), or set "
                f"executor.ray.num_gpus.{stage}: 0 to run it on CPUs")
        size = min(size, int(cluster_gpus // gpus_per_actor))
    return size


def _on_ray(ctx: Context, stage: MapStage, tasks: list[Task], bar) -> None:
    import ray  # the `ray` extra

    options = ctx.params["executor"]["ray"]
    if not ray.is_initialized():
        ray.init(address=options["address"], include_dashboard=False, log_to_driver=False,
                 **({} if options["address"] else {"num_cpus": options.get("local_cpus")}))
    ctx = replace(ctx, root=ctx.root.absolute())  # the actors' working directory is their node's, not ours
    resources = stage.resources(ctx.params)
    actors = actor_pool(stage.name, int(options["actors"]), len(tasks), resources.gpus,
                        ray.cluster_resources().get("GPU", 0.0))
    results = ray.data.from_items([{"index": t.index} for t in tasks], override_num_blocks=len(tasks)).map_batches(
        _RayParts,
        fn_constructor_kwargs={"ctx": ctx, "stage": stage, "tasks": {t.index: t for t in tasks}},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=resources.gpus,
        num_cpus=resources.cpus,
    )
    for batch in results.iter_batches(batch_size=1):
        bar.update(int(sum(batch["images"])))
