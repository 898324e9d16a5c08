"""What the annotation stages share: building backends from params and stamping provenance."""

from __future__ import annotations

from typing import Any

from groundcap import params as params_mod
from groundcap.annotators import base, registry


def backend(step: str, name: str, section: dict[str, Any], shared: dict[str, Any] | None = None) -> base.Backend:
    """Backend ``name`` with options ``section[name]`` (plus stage-wide ``shared`` options)."""
    options = {**(shared or {}), **(section.get(name) or {})}
    return registry.create(step, name, options)


def provenance(backend: base.Backend, section: dict[str, Any]) -> dict[str, str]:
    """Backend, version, model id, prompt hash ("" for prompt-less backends) and params hash."""
    return {"prompt_hash": "", **backend.provenance(), "params_hash": params_mod.digest(section)}
