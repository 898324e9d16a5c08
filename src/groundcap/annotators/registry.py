"""Backends by step and name, discovered so that adding one is adding a file.

Every module in ``groundcap.annotators.backends`` is imported once and registers its classes with
``@register``; third-party packages can add backends through the ``groundcap.backends`` entry-point
group. Backend modules must import heavy or GPU-only libraries (torch, vllm) inside their methods,
never at module level, so the CPU install lists every backend without importing them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
from dataclasses import dataclass
from typing import Any

from groundcap.annotators import base
from groundcap.errors import BackendUnavailable, UnknownName

STEPS: dict[str, type[base.Backend]] = {
    "tagger": base.Tagger,
    "detector": base.Detector,
    "prompted_segmenter": base.PromptedSegmenter,
    "concept_segmenter": base.ConceptSegmenter,
    "mask_generator": base.MaskGenerator,
    "region_captioner": base.RegionCaptioner,
    "scene_captioner": base.SceneCaptioner,
    "verifier": base.Verifier,
}


@dataclass(frozen=True)
class BackendInfo:
    step: str
    name: str
    cls: type[base.Backend]
    needs: tuple[str, ...]  # importable modules the backend requires
    device: str  # cpu | gpu
    description: str

    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]


_REGISTRY: dict[str, dict[str, BackendInfo]] = {step: {} for step in STEPS}
_discovered = False


class UnknownBackend(UnknownName):
    """No backend of that name (or no such step)."""


def register(step: str, name: str, *, needs: tuple[str, ...] = (), device: str = "cpu", description: str = ""):
    """Class decorator: make a backend available as ``name`` for ``step``."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")

    def decorate(cls: type[base.Backend]) -> type[base.Backend]:
        if not issubclass(cls, STEPS[step]):
            raise TypeError(f"{cls.__name__} must subclass {STEPS[step].__name__} to register for {step}")
        if name in _REGISTRY[step] and _REGISTRY[step][name].cls is not cls:
            raise ValueError(f"backend {name!r} is already registered for {step}")
        cls.name = name
        doc = description or ((cls.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[step][name] = BackendInfo(step, name, cls, tuple(needs), device, doc)
        return cls

    return decorate


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    from groundcap.annotators import backends

    for module in pkgutil.iter_modules(backends.__path__):
        importlib.import_module(f"{backends.__name__}.{module.name}")
    for entry in importlib.metadata.entry_points(group="groundcap.backends"):
        entry.load()


def backends(step: str | None = None) -> list[BackendInfo]:
    _discover()
    steps = [step] if step else list(STEPS)
    return [info for s in steps for _, info in sorted(_REGISTRY[s].items())]


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (torch is imported only if installed). Asked through
    NVML (``groundcap/__init__.py`` sets ``PYTORCH_NVML_BASED_CUDA_CHECK``), so the check leaves CUDA
    uninitialised and a vLLM engine started after it can still fork its engine core."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def info(step: str, name: str) -> BackendInfo:
    """The registration of backend ``name`` for ``step``."""
    _discover()
    if step not in _REGISTRY:
        raise UnknownBackend(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
    found = _REGISTRY[step].get(name)
    if found is None:
        known = ", ".join(sorted(_REGISTRY[step])) or "(none)"
        raise UnknownBackend(f"no {step} backend named {name!r}; registered: {known}")
    return found


def create(step: str, name: str, options: dict[str, Any] | None = None) -> base.Backend:
    """Instantiate backend ``name`` for ``step`` with its options from params."""
    found = info(step, name)
    if missing := found.missing():
        raise BackendUnavailable(
            f"{step} backend {name!r} needs {', '.join(missing)}, which is not installed "
            f"(see `groundcap backends`)"
        )
    return found.cls(**(options or {}))
