"""The pipeline's stages in order; each is ``run(ctx)`` over ``work/<stage>`` directories.

``dvc.yaml`` runs them one by one (``groundcap <stage>``); ``groundcap run`` chains them in process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from groundcap.engine import Context
from groundcap.errors import UnknownName

# name -> one-line help; the modules themselves are imported only when a stage runs (some are heavy).
STAGES = {
    "ingest": "Validate, normalize and hash the source images; record every rejected file with its reason.",
    "tag": "Tag each image and detect labelled boxes (detectors prompted with the tags).",
    "segment": "Box-prompted masks plus everything-mode masks, merged into non-overlapping entity regions.",
    "caption_regions": "Write a short and a detailed caption for every region.",
    "caption_scene": "Compose one grounded scene caption per image, phrases marked `<rN>phrase</rN>`.",
    "crosscheck": "Caption every region again with a second, independent model and measure how far the two agree.",
    "qa": "Check captions against pixels and the second model, score every region and image, write reports/qa.json.",
    "dedup": "Find exact and near-duplicate images (perceptual hashes) and captions (MinHash); keep one per cluster.",
    "split": "Assign released images to train/validation/test by group hash; audited ones to human_test.",
    "build": "Check the audit gate, then write the release: Parquet configs, WebDataset tars, COCO JSON.",
    "card": "Write the dataset card release/README.md from the records, then checksums.json.",
}
ORDER = tuple(STAGES)
ANNOTATION_STAGES = ("tag", "segment", "caption_regions", "caption_scene")  # the ones backends run in


def runner(name: str) -> Callable[[Context], None]:
    if name not in ORDER:
        raise UnknownName(f"unknown stage {name!r}; stages are {', '.join(ORDER)}")
    return importlib.import_module(f"groundcap.stages.{name}").run


def run_all(ctx: Context, stages=ORDER) -> None:
    for name in stages:
        runner(name)(ctx)
