"""The pipeline's shape: its stages in order, each with the one line the CLI and the dataset card show.

This table is the one list of stages. The CLI's commands, ``dvc.yaml``, ``groundcap run``, the params
checks and the card's list of stages come from it; everything else a stage declares lives in its own
module, ``stages/<name>.py``, which is imported only when the stage is needed: printing the CLI's help
imports no stage, and with it none of the models' or tables' libraries.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from groundcap.errors import UnknownName

if TYPE_CHECKING:
    from groundcap.pipeline.stage import Stage

ORDER: tuple[tuple[str, str], ...] = (
    ("ingest", "Validate, normalize and hash the source images; record every rejected file with its reason."),
    ("tag", "Tag each image and detect labelled boxes (detectors prompted with the tags)."),
    ("segment", "Box-prompted masks plus everything-mode masks, merged into non-overlapping entity regions."),
    ("caption_regions", "Write a short and a detailed caption for every region."),
    ("caption_scene", "Compose one grounded scene caption per image, phrases marked `<rN>phrase</rN>`."),
    ("crosscheck", "Caption every region again with a second, independent model and measure how far the two "
                   "agree."),
    ("qa", "Check captions against pixels and the second model, score every region and image, write "
           "reports/qa.json."),
    ("dedup", "Find exact and near-duplicate images (perceptual hashes) and captions (MinHash); keep one per "
              "cluster."),
    ("split", "Assign released images to train/validation/test by group hash; audited ones to human_test."),
    ("redact", "Privacy pass: blur faces and licence plates in the image bytes the release holds "
               "(release.redact); masks and captions keep the original pixels."),
    ("build", "Check the audit gate, then write the release: Parquet configs, WebDataset tars, COCO JSON."),
    ("card", "Write the dataset card release/README.md and croissant.json from the records, then "
             "checksums.json."),
)
NAMES: tuple[str, ...] = tuple(name for name, _ in ORDER)
HELP: dict[str, str] = dict(ORDER)


@cache
def stage(name: str) -> Stage:
    """The stage ``name`` (its module ``groundcap.stages.<name>`` declares it as ``STAGE``)."""
    if name not in HELP:
        raise UnknownName(f"unknown stage {name!r}; stages are {', '.join(NAMES)}")
    found = importlib.import_module(f"groundcap.stages.{name}").STAGE
    if found.name != name:
        raise RuntimeError(f"groundcap.stages.{name} declares the stage {found.name!r}")
    return found


def stages() -> tuple[Stage, ...]:
    """Every stage, in order."""
    return tuple(stage(name) for name in NAMES)
