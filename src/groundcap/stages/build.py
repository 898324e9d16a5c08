"""Stage ``build``: checks the audit gate, joins the stage tables into release records and writes
every release format.

The gate comes first (``audit.verdicts.gate``): a release whose audited error rate may exceed
``audit.max_error_rate``, or that lacks required audits, is refused before anything is written.
Only images with a split go in, with only their passing regions; the scene caption is QA's copy,
whose references to dropped regions are already unwrapped; people's corrections from the audit
replace the machine's captions.
"""

from __future__ import annotations

from collections.abc import Iterator

from tqdm.auto import tqdm

from groundcap import grounding, parts
from groundcap.audit import verdicts
from groundcap.builders import ReleaseWriter
from groundcap.errors import AuditError
from groundcap.stage import Context, Stage

_INPUTS = ("ingest", "segment", "caption_regions", "qa", "split")


def run(ctx: Context) -> None:
    result = verdicts.gate(ctx.root, ctx.params)
    if not result.ok:
        raise AuditError(f"release refused by the audit gate: {result.message}")
    ctx.release.mkdir(parents=True, exist_ok=True)
    with ReleaseWriter(ctx.release, ctx.params) as writer:
        for split, record in tqdm(records(ctx), desc="build", unit="img", disable=not ctx.progress):
            writer.add(split, record)


def records(ctx: Context) -> Iterator[tuple[str, dict]]:
    """``(split, record)`` per released image, in part order (deterministic)."""
    corrections = verdicts.human_test(ctx.root, ctx.params)
    for index in parts.list_parts(ctx.work("ingest")):
        tables = [parts.read_part(ctx.work(stage), index) for stage in _INPUTS]
        for image, seg, cap, qa, split in zip(*tables, strict=True):
            if split["split"] is None:
                continue
            kept = {r["region_id"] for r in qa["regions"] if r["passed"]}
            captions = {c["region_id"]: c for c in cap["captions"]}
            fixed = corrections.get(image["image_id"]) or {}
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
                    **_captions(captions[r["region_id"]], (fixed.get("regions") or {}).get(r["region_id"])),
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
                "scene_caption": _scene(image["image_id"], qa["scene_caption"], fixed.get("scene_caption"), kept),
                "qa_score": qa["score"],
            }


def _captions(machine: dict, fixed: dict | None) -> dict:
    fixed = fixed or {}
    return {"short_caption": fixed.get("short") or machine["short"],
            "detailed_caption": fixed.get("detailed") or machine["detailed"]}


def _scene(image_id: str, machine: str, fixed: str | None, kept: set[int]) -> str:
    """The corrected scene caption when people gave one; it must point only at released regions."""
    if not fixed:
        return machine
    refs = {rid for rid, _ in grounding.references(fixed)}
    if not grounding.is_well_formed(fixed) or not refs <= kept:
        raise AuditError(f"the audited scene caption of {image_id} has malformed references or points at "
                         f"regions not in the release ({sorted(refs - kept)}); fix it in the verdicts file")
    return fixed


class BuildStage(Stage):
    name = "build"
    help = "Check the audit gate, then write the release: Parquet configs, WebDataset tars, COCO JSON."
    inputs = ("ingest", "segment", "caption_regions", "qa", "split")
    params = ("build", "audit", "release.pretty_name", "release.version", "release.license")
    deps = ("audits",)
    outs = ("release/data", "release/regions", "release/wds", "release/coco")
    run = staticmethod(run)


STAGE = BuildStage()
