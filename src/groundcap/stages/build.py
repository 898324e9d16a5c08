"""Stage ``build``: checks the audit gate, joins the stage tables into release records and writes
every release format.

The gate comes first (``audit.verdicts.gate``): a release whose audited error rate may exceed
``audit.max_error_rate``, or that lacks required audits, is refused before anything is written.
Only images with a split go in, with only their passing regions; the scene caption is QA's copy,
whose references to dropped regions are already unwrapped; people's corrections from the audit
replace the machine's captions. The join is column-wise (``builders.columns.join_part``) and the
release folders are written by ``builders.write_release``, in ``build.workers`` processes.
"""

from __future__ import annotations

from collections.abc import Iterator

from groundcap import grounding, parts
from groundcap.audit import verdicts
from groundcap.builders import write_release
from groundcap.builders.columns import join_part, to_records
from groundcap.engine import Context

_INPUTS = ("ingest", "segment", "caption_regions", "qa", "split")


def run(ctx: Context) -> None:
    result = verdicts.gate(ctx.root, ctx.params)
    if not result.ok:
        raise RuntimeError(f"release refused by the audit gate: {result.message}")
    ctx.release.mkdir(parents=True, exist_ok=True)
    write_release(ctx.work("ingest").parent, ctx.release, ctx.params, verdicts.human_test(ctx.root, ctx.params),
                  workers=ctx.params["build"].get("workers", 1), progress=ctx.progress)


def records(ctx: Context) -> Iterator[tuple[str, dict]]:
    """``(split, record)`` per released image, in part order (deterministic): the batches build
    writes, as dicts (for benchmarks and callers; build itself never makes them)."""
    corrections = verdicts.human_test(ctx.root, ctx.params)
    for index in parts.list_parts(ctx.work("ingest")):
        yield from to_records(join_part(ctx.work("ingest").parent, index, corrections))


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
        raise ValueError(f"the audited scene caption of {image_id} has malformed references or points at "
                         f"regions not in the release ({sorted(refs - kept)}); fix it in the verdicts file")
    return fixed
