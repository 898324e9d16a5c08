"""The pipeline's shape: its stages, in order. Everything else (the CLI's commands, ``dvc.yaml``, the
card's list of stages, ``groundcap run``) is derived from this tuple and the stages' declarations."""

from __future__ import annotations

from groundcap.errors import UnknownName
from groundcap.pipeline.stage import Stage
from groundcap.stages import (
    build,
    caption_regions,
    caption_scene,
    card,
    crosscheck,
    dedup,
    ingest,
    qa,
    redact,
    segment,
    split,
    tag,
)

STAGES: tuple[Stage, ...] = tuple(module.STAGE for module in (
    ingest, tag, segment, caption_regions, caption_scene, crosscheck, qa, dedup, split, redact, build, card))
NAMES = tuple(stage.name for stage in STAGES)


def get(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise UnknownName(f"unknown stage {name!r}; stages are {', '.join(NAMES)}")
