"""What the annotation stages share: declaring and building backends from params, stamping provenance."""

from __future__ import annotations

from typing import Any

from groundcap import params as params_mod
from groundcap.annotators import base, registry
from groundcap.pipeline.stage import BackendSpec


def spec(step: str, name: str, section: dict[str, Any], shared: dict[str, Any] | None = None) -> BackendSpec:
    """Backend ``name`` with options ``section[name]`` (plus stage-wide ``shared`` options)."""
    return BackendSpec(step, name, {**(shared or {}), **(section.get(name) or {})})


def make_backend(backend: BackendSpec) -> base.Backend:
    """The backend ``backend`` names, built (its models loaded) through the registry."""
    return registry.create(backend.step, backend.name, backend.options)


def provenance(backend: base.Backend, section: dict[str, Any]) -> dict[str, str]:
    """Backend, version, model id, prompt hash ("" for prompt-less backends) and params hash."""
    return {"prompt_hash": "", **backend.provenance(), "params_hash": params_mod.digest(section)}
