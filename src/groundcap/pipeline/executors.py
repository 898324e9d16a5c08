"""Where a map stage's parts run: in this process, in local worker processes, or on a Ray cluster.

``engine.kind`` picks one. Each runs the same ``worker.PartWorker`` (one ``setup``, so one model
load, per worker) over the parts to do, and each part is written by its worker, so the executor
changes where and how fast, never what is written. Progress is counted in images (items/s, ETA).

- ``local`` with ``engine.workers: 1`` runs in this process (and tears the stage down after it);
  more workers are spawned processes, whose models go with them.
- ``ray`` runs ``ray.data`` over the part indices with ``map_batches`` on a fixed actor pool of
  ``engine.ray.actors`` actors, each with the stage's declared resources (``MapStage.resources``:
  ``num_cpus``, and ``num_gpus`` when it runs GPU backends); ``engine.ray.address`` joins a running
  cluster (null: start a local one). Workers read and write ``work/`` directly, so on several nodes
  it must be a shared filesystem.

Every worker process and Ray actor imports ``groundcap`` before its first part (to unpickle its worker), and
with it the NVML-based CUDA check (``groundcap/__init__.py``): its CUDA check leaves CUDA uninitialised, so a
vLLM engine it starts can still fork its engine core (spawned workers inherit the variable besides).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from tqdm.auto import tqdm

from groundcap.errors import BackendUnavailable
from groundcap.pipeline.stage import Context, MapStage
from groundcap.pipeline.worker import PartWorker

KINDS = ("local", "ray")


def run(ctx: Context, stage: type[MapStage], todo: Mapping[int, str], images: int,
        keep: frozenset = frozenset()) -> None:
    """Compute the parts ``todo`` (index -> fingerprint) of ``stage``; ``images`` is their total, for
    progress; ``keep``: models the next stage reuses, not freed when this one ends."""
    engine = ctx.params["engine"]  # engine.kind and the counts are checked when params load (params_schema)
    with tqdm(total=images, desc=stage.name, unit="img", disable=not ctx.progress) as bar:
        if engine["kind"] == "ray":
            _on_ray(ctx, stage, todo, bar)
        elif int(engine["workers"]) > 1:
            _in_processes(ctx, stage, todo, bar, int(engine["workers"]))
        else:
            worker = PartWorker(ctx.root, ctx.params, stage)
            try:
                for index, fingerprint in todo.items():
                    bar.update(worker(index, fingerprint))
            finally:
                worker.stage.teardown(keep)


_worker: PartWorker | None = None  # one per worker process


def _start(root, params, stage) -> None:
    global _worker
    _worker = PartWorker(root, params, stage)


def _part(index: int, fingerprint: str) -> int:
    return _worker(index, fingerprint)


def _in_processes(ctx: Context, stage: type[MapStage], todo: Mapping[int, str], bar, workers: int) -> None:
    # spawn, not fork: a forked copy of a process holding model threads (torch, onnxruntime) can deadlock
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn"), initializer=_start,
                             initargs=(str(ctx.root), ctx.params, stage)) as pool:
        for future in as_completed([pool.submit(_part, i, f) for i, f in todo.items()]):
            bar.update(future.result())


class _RayParts:
    """A Ray Data actor: a PartWorker built once, fed part indices one batch (one part) at a time."""

    def __init__(self, root: str, params: dict, stage: type[MapStage]):
        self.worker = PartWorker(root, params, stage)

    def __call__(self, batch: dict) -> dict:
        images = [self.worker(int(i), str(f)) for i, f in zip(batch["index"], batch["fingerprint"], strict=True)]
        return {"index": batch["index"], "images": images}


def actor_pool(stage: str, actors: int, parts: int, gpus_per_actor: float, cluster_gpus: float) -> int:
    """How many actors to start: ``engine.ray.actors``, no more than there are parts, and no more than the
    cluster's GPUs can hold (an actor Ray cannot place would wait forever, and with it the stage)."""
    size = min(actors, parts)
    if gpus_per_actor:
        if cluster_gpus < gpus_per_actor:
            raise BackendUnavailable(
                f"stage {stage} runs GPU backends ({gpus_per_actor:g} GPU per actor) but the Ray cluster has "
                f"{cluster_gpus:g} GPUs: join a cluster with GPUs (engine.ray.address), or set "
                f"engine.ray.num_gpus.{stage}: 0 to run it on CPUs")
        size = min(size, int(cluster_gpus // gpus_per_actor))
    return size


def _on_ray(ctx: Context, stage: type[MapStage], todo: Mapping[int, str], bar) -> None:
    import ray  # the `ray` extra

    options = ctx.params["engine"]["ray"]
    if not ray.is_initialized():
        ray.init(address=options["address"], include_dashboard=False, log_to_driver=False,
                 **({} if options["address"] else {"num_cpus": options.get("local_cpus")}))
    items = [{"index": i, "fingerprint": f} for i, f in todo.items()]
    resources = stage().resources(ctx.params)
    actors = actor_pool(stage.name, int(options["actors"]), len(items), resources.gpus,
                        ray.cluster_resources().get("GPU", 0.0))
    results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _RayParts,
        fn_constructor_kwargs={"root": str(ctx.root), "params": ctx.params, "stage": stage},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=resources.gpus,
        num_cpus=resources.cpus,
    )
    for batch in results.iter_batches(batch_size=1):
        bar.update(int(sum(batch["images"])))
