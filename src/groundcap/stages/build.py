"""Stage ``build``: joins the stage tables into release records and writes every release format.

Only images that passed QA and got a split go in, with only their passing regions; the scene
caption is QA's copy, whose references to dropped regions are already unwrapped.
"""

from __future__ import annotations

from collections.abc import Iterator

from tqdm.auto import tqdm

from groundcap import parts
from groundcap.builders import ReleaseWriter
from groundcap.engine import Context

_INPUTS = ("ingest", "segment", "caption_regions", "qa", "split")


def run(ctx: Context) -> None:
    ctx.release.mkdir(parents=True, exist_ok=True)
    with ReleaseWriter(ctx.release, ctx.params) as writer:
        for split, record in tqdm(records(ctx), desc="build", unit="img", disable=not ctx.progress):
            writer.add(split, record)


def records(ctx: Context) -> Iterator[tuple[str, dict]]:
    """``(split, record)`` per released image, in part order (deterministic)."""
    for index in parts.list_parts(ctx.work("ingest")):
        tables = [parts.read_part(ctx.work(stage), index) for stage in _INPUTS]
        for image, seg, cap, qa, split in zip(*tables, strict=True):
            if split["split"] is None:
                continue
            kept = {r["region_id"] for r in qa["regions"] if r["passed"]}
            captions = {c["region_id"]: c for c in cap["captions"]}
            regions = [
                {
                    "region_id": r["region_id"],
                    "bbox": r["bbox"],
                    "area": r["area"],
                    "segmentation": r["segmentation"],
                    "label": r["label"],
                    "granularity": r["granularity"],
                    "parent_id": r["parent_id"],
                    "source": r["source"],
                    "short_caption": captions[r["region_id"]]["short"],
                    "detailed_caption": captions[r["region_id"]]["detailed"],
                }
                for r in seg["regions"]
                if r["region_id"] in kept
            ]
            yield split["split"], {
                "image_id": image["image_id"],
                "image": {"bytes": image["bytes"], "path": None},
                "format": image["format"],
                "width": image["width"],
                "height": image["height"],
                "regions": regions,
                "scene_caption": qa["scene_caption"],
                "qa_score": qa["score"],
            }
