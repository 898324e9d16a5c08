"""Pipeline parameters: the packaged defaults, overridden by a user's YAML file.

The repository's ``params.yaml`` is what ``dvc repro`` reads; ``defaults.yaml`` beside this module is
the same file shipped with the package, so ``groundcap run`` without ``--params`` builds exactly the
demo release (a test keeps the two equal). Unknown keys are an error, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from groundcap.errors import ParamsError
from groundcap.params import validation

__all__ = ["ParamsError", "content", "defaults", "digest", "load", "profile_path"]


def defaults() -> dict[str, Any]:
    text = resources.files("groundcap").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _merge(base: dict, override: dict, path: tuple[str, ...], rules: tuple[set, set]) -> dict:
    """``override`` merged into ``base``; ``rules`` (``validation.merge_rules``): the paths that may gain keys
    (backend option sections, whose other keys name backends, and open mappings) and those replaced whole."""
    open_paths, replaced = rules
    out = copy.deepcopy(base)
    for key, value in override.items():
        here = path + (key,)
        # a backend's option section (tag.haar) may set any option the backend declares: the schema checks it
        if key not in base and path not in open_paths and not (len(path) == 2 and path[:1] in open_paths):
            known = ", ".join(sorted(base)) or "(none)"
            raise ParamsError(f"unknown parameter '{'.'.join(here)}'; known keys here: {known}")
        if isinstance(value, dict) and isinstance(base.get(key), dict) and here not in replaced:
            out[key] = _merge(base[key], value, here, rules)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        user = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(user, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, got {type(user).__name__}")
    return user


PROFILES = Path(__file__).parent.parent / "profiles"  # shipped with the package: gpu, sa_pancap


def profile_path(name: str, base: Path) -> Path:
    """A profile given as a path to a YAML file (relative to ``base``, the params file's folder), or by
    name: ``<base>/profiles/<name>.yaml`` when the project has one, else the packaged profile."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path if path.is_absolute() else base / path
    own = base / "profiles" / f"{name}.yaml"
    if own.is_file() or not (PROFILES / f"{name}.yaml").is_file():
        return own
    return PROFILES / f"{name}.yaml"


def load(path: str | Path | None = None, profile: str | None = None) -> dict[str, Any]:
    """Defaults, overridden by ``path`` when given, then by the profiles it names (``profile: gpu``), then
    by ``profile`` (a command's ``--profile``).

    A profile overrides the sections it names on top of the params file, so ``dvc exp run -S
    profile=gpu`` switches a project to the production backends without editing params.yaml. A list
    applies several in order (``profile: [gpu, sa_pancap]``: the GPU engine, SA-Pancap's split shape).
    """
    params = defaults()
    base = Path.cwd()
    rules = validation.merge_rules()
    if path is not None:
        path = Path(path)
        params = _merge(params, _read(path), (), rules)
        base = path.parent
    if profile is not None:
        named = params.get("profile") or []
        params["profile"] = [*([named] if isinstance(named, str) else named), profile]
    if path is not None or profile is not None:
        names = params.get("profile") or []
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ParamsError(f"params: profile is {params['profile']!r}; expected a profile name, a list of names, "
                              "or null")
        for name in names:
            layer = _read(profile_path(name, base))
            if "profile" in layer:
                raise ParamsError(f"profile {name!r} may not name another profile")
            params = _merge(params, layer, (), rules)
    validation.check(params)
    return params


def content(params: dict[str, Any]) -> dict[str, Any]:
    """The params that decide what is written: all but ``executor`` (where and how fast parts run),
    ``ingest.source_policy`` (how far an untrusted source is trusted; what it refused is in the rejects) and
    ``ingest.images`` (whether ``work/ingest`` copies an image or points at it: the same bytes either way)."""
    kept = {key: value for key, value in params.items() if key != "executor"}
    if isinstance(kept.get("ingest"), dict):
        kept["ingest"] = {key: value for key, value in kept["ingest"].items() if key not in ("source_policy", "images")}
    return kept


def digest(value: Any) -> str:
    """Short stable hash of any JSON-able value (a params section, a prompt) for provenance."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def lookup(params: dict[str, Any], key: str) -> Any:
    """The value at a dotted key (``"release.previous"``); KeyError names the key when it is absent."""
    value: Any = params
    for name in key.split("."):
        if not isinstance(value, dict) or name not in value:
            raise KeyError(f"params have no {key!r}")
        value = value[name]
    return value


def subset(params: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Only ``keys`` (sections or dotted keys) of ``params``, nested as in ``params``: what a stage declares."""
    out: dict[str, Any] = {}
    for key in keys:
        *parents, last = key.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = copy.deepcopy(lookup(params, key))
    return out
