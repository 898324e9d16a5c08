"""One module per pipeline stage, each declaring its ``Stage`` (``groundcap.pipeline.stage``) as ``STAGE``;
``groundcap.pipeline.order`` puts them in order."""

from __future__ import annotations

from pathlib import Path


def stage_names() -> set[str]:
    """The stages' names, from this folder's modules: for code that the pipeline's modules import, and
    so cannot import the pipeline back (params checks, QA's error counts)."""
    return {p.stem for p in Path(__file__).parent.glob("*.py")} - {"__init__", "common"}
