"""Checks that a run can get through before it starts: every backend the params name is installed, its
models are on this machine (a local folder or the Hugging Face cache), CUDA is there when the params
require a GPU, and the VLM engines a stage loads together fit in the GPU's memory.

A model missing from the cache would otherwise end the run hours in, in the first stage that loads it,
with a transformers traceback. ``groundcap run`` and each stage command run these checks first (for
the stages they run); ``groundcap doctor`` prints them all; ``groundcap models fetch`` downloads what
is missing.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from groundcap.annotators import registry
from groundcap.errors import BackendUnavailable
from groundcap.models.hub import local_config
from groundcap.params import subset
from groundcap.pipeline.stage import MapStage, Stage
from groundcap.vlm.vllm_offline import GPU_MEMORY_DEFAULT


@dataclass(frozen=True)
class Finding:
    stage: str
    what: str  # the backend, model or resource checked
    ok: bool
    detail: str  # what was found, or what is wrong and what to do


def _own(stage: Stage, params: dict) -> dict:
    return subset(params, (*stage.param_keys, "executor"))


def hub_models(stages: list[Stage], params: dict) -> list[str]:
    """The Hugging Face model ids the backends of ``stages`` load, each once, in order."""
    found: dict[str, None] = {}
    for stage in stages:
        for b in stage.backends(_own(stage, params)):
            found.update(dict.fromkeys(registry.info(b.step, b.name).cls.hub_models(b.options)))
    return list(found)


def model_state(model: str) -> tuple[bool, str]:
    """Whether ``model`` can be loaded here without a download, and how."""
    if Path(model).is_dir():
        return True, f"local folder {model}"
    if local_config(model) is not None:
        return True, "in the Hugging Face cache"
    if os.environ.get("HF_HUB_OFFLINE"):
        return False, "not in the Hugging Face cache and HF_HUB_OFFLINE is set: run `groundcap models fetch` " \
                      "where the Hub is reachable, with the same HF_HOME"
    return False, "not in the Hugging Face cache: run `groundcap models fetch` first (a run would download it " \
                  "when its stage starts, and fail there if the Hub is out of reach)"


def check(params: dict, stages: list[Stage]) -> list[Finding]:
    """Every finding for ``stages`` under ``params``: one per backend, per model, per GPU need. CUDA is asked only
    for a stage that needs it: the check imports torch, about 2 s of every stage process otherwise."""
    out: list[Finding] = []
    for stage in (s for s in stages if isinstance(s, MapStage)):
        own = _own(stage, params)
        memory: dict[str, float] = {}
        models: dict[str, None] = {}
        for b in stage.backends(own):
            info = registry.info(b.step, b.name)
            missing = [*info.missing(),
                       *(m for m in info.cls.requires(b.options) if importlib.util.find_spec(m) is None)]
            out.append(Finding(stage.name, f"{b.step} {b.name}", not missing,
                               f"needs {', '.join(missing)}: pip install 'groundcap[gpu]'" if missing else "installed"))
            models.update(dict.fromkeys(info.cls.hub_models(b.options)))
            merged = {**info.cls.defaults, **b.options}
            if merged.get("engine") == "vllm":
                memory[merged["model"]] = float((merged.get("engine_options") or {}).get("gpu_memory_utilization",
                                                                                          GPU_MEMORY_DEFAULT))
        out += [Finding(stage.name, model, *model_state(model)) for model in models]
        if own["executor"]["require_gpu"] and stage.resources(own).gpus:
            cuda = registry.cuda_available()
            out.append(Finding(stage.name, "CUDA", cuda, "a CUDA device is visible" if cuda else
                               "no CUDA device visible, and executor.require_gpu is set: run on a GPU node"))
        if memory:
            out += _gpu_memory(stage.name, memory, own["executor"])
    return out


def _gpu_memory(stage: str, memory: dict[str, float], engine: dict) -> list[Finding]:
    """Whether the vLLM engines of one stage fit on its GPU: each ``executor.workers`` process of the local
    executor loads every engine of the stage (on the same GPU), so their shares add up per process and
    per worker. One engine in one process is vLLM's own business."""
    processes = int(engine["workers"]) if engine["kind"] == "local" else 1
    if len(memory) * processes == 1:
        return []
    total = sum(memory.values()) * processes
    engines = ", ".join(f"{m}: {v:g}" for m, v in memory.items())
    workers = f" in each of {processes} worker processes (executor.workers)" if processes > 1 else ""
    detail = f"its vLLM engines ask {total:.2f} of the GPU together ({engines}{workers})"
    if total > 0.95:
        detail += f": lower their gpu_memory_utilization{' or executor.workers' if workers else ''} to sum <= 0.95"
    return [Finding(stage, "GPU memory", total <= 0.95, detail)]


def require(params: dict, stages: list[Stage]) -> None:
    """Stop before anything runs when a check fails, naming each failure and what to do."""
    failed = [f for f in check(params, stages) if not f.ok]
    if failed:
        raise BackendUnavailable("preflight failed (`groundcap doctor` shows every check):\n" +
                                 "\n".join(f"  {f.stage}: {f.what}: {f.detail}" for f in failed))
