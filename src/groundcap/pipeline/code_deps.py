"""The code a stage depends on: its module's imports within groundcap, followed to the end, plus the
modules and prompt files of the backends of the steps it runs.

This is what narrows a stage's fingerprint (``resume``) and its DVC deps (``dvc_yaml``): editing the
card's code or a builder reruns no model stage, editing a backend reruns the stages that run its
step. Imports are read from the source (``ast``), function-level ones included, so a lazy import
counts as much as a top-level one; backends are found through the registry, since it discovers
them by listing a folder rather than importing them by name.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

import groundcap

PACKAGE = Path(groundcap.__file__).parent  # the files hashed; tests point it at a copy
# Modules that cannot change what a stage writes, not followed: the params checks only accept or refuse
# params, and they import the modules whose values they check (versions, splits, QA), which would tie
# every stage to those.
# Nor is the reader of ingest's references: it returns the bytes ingest recorded (SHA-256 checked) or an error.
NOT_FOLLOWED = {"groundcap.params.validation", "groundcap.sources.reference"}


def module_path(module: str) -> Path | None:
    """The file of ``groundcap.a.b`` (``a/b.py`` or ``a/b/__init__.py``), or None outside the package."""
    if module != "groundcap" and not module.startswith("groundcap."):
        return None
    rel = Path(*module.split(".")[1:])
    if rel == Path():
        return PACKAGE / "__init__.py"
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Modules of groundcap that ``path`` imports anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return {m for m in _imported(path.read_text(encoding="utf-8"), package) if module_path(m) is not None}


@functools.cache
def _imported(source: str, package: str) -> frozenset[str]:
    """Every module ``source`` imports, relative imports resolved against ``package``. Cached by the source
    itself: each stage's closure reads the same files, and parsing them again cost ~0.6 s per run."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return frozenset(found)


def closure(modules: list[str]) -> list[Path]:
    """The files of ``modules`` and of every groundcap module they import, transitively; sorted."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        path = module_path(module)
        if module in seen or path is None or module in NOT_FOLLOWED:
            continue
        seen[module] = path
        todo.extend(_imports(path, module))
        parent = module.rpartition(".")[0]  # importing a.b runs a/__init__.py first
        if parent:
            todo.append(parent)
    return sorted(set(seen.values()))


def step_files(steps: tuple[str, ...]) -> list[Path]:
    """Modules (and their imports) and prompt files of every backend registered for ``steps``."""
    from groundcap.annotators import registry

    infos = [info for step in steps for info in registry.backends(step)]
    files = set(closure(sorted({info.cls.__module__ for info in infos})))
    for info in infos:
        files |= {PACKAGE / "prompts" / f"{name}.txt" for name in getattr(info.cls, "prompt_names", ())}
        files |= {PACKAGE / name for name in info.cls.data_files}
    return sorted(f for f in files if f.is_file())


def stage_files(stage) -> list[Path]:
    """Every groundcap file whose change can change what ``stage`` writes."""
    from groundcap.pipeline.stage import MapStage

    roots = [type(stage).__module__]
    if isinstance(stage, MapStage):
        roots.append("groundcap.pipeline.worker")  # decides what a part holds: batches, error rows, retries
    return sorted(set(closure(roots)) | set(step_files(stage.steps)))


def digest(files: list[Path]) -> str:
    """SHA-256 over the files' package-relative paths and bytes."""
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
