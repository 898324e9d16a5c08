"""Stage ``build``: checks the audit gate, joins the stage tables into release records and writes
every release format.

The gate comes first (``audit.verdicts.gate``): a release whose audited error rate may exceed
``audit.max_error_rate``, or that lacks required audits, is refused before anything is written.
Only images with a split go in, with only their passing regions; the scene caption is QA's copy,
whose references to dropped regions are already unwrapped; people's corrections from the audit
replace the machine's captions. The join is column-wise (``builders.columns.join_part``) and the
release folders are written by ``builders.write_release``, in ``executor.build_workers`` processes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from groundcap.audit import verdicts
from groundcap.builders import write_release
from groundcap.builders.columns import INPUTS, join_part, to_records
from groundcap.builders.writer import OPTIONAL_FORMATS
from groundcap.errors import AuditError, ReleaseError
from groundcap.params.validation import Bool, Int, StrList
from groundcap.pipeline.stage import Context, Stage
from groundcap.storage import parts


class BuildStage(Stage):
    name = "build"
    inputs = tuple(INPUTS)  # what the column-wise join reads
    # the COCO files name each image's licence, or release.license's override; a reference release records the
    # source's kind, ingest's limits and the blur's cells
    param_keys = ("build", "audit", "release.pretty_name", "release.version", "release.license", "release.license_name",
                  "release.license_link", "release.images", "source", "ingest.min_side", "ingest.max_pixels",
                  "ingest.max_bytes", "ingest.animated", "redact.cells")
    deps = ("audits",)
    outs = ("release/data", "release/regions", "release/wds", "release/coco")
    param_types = {"build": {
        "shard_bytes": Int(1),
        "formats": StrList(allowed=OPTIONAL_FORMATS),
        "wds_shard_bytes": Int(1),
        "row_group_rows": Int(1),
        "row_group_bytes": Int(1),
        "pancap_text": Bool(),
    }}

    def run(self, ctx: Context) -> None:
        result = verdicts.gate(ctx.root, ctx.params)
        if not result.ok:
            raise AuditError(f"release refused by the audit gate: {result.message}")
        left_out = Counter()
        for index in parts.list_parts(ctx.work("split")):
            left_out.update(r["reason"] for r in parts.read_part(ctx.work("split"), index, ["split", "reason"]))
        if None not in left_out:  # no image has a split: a card could declare no config, a loader would find nothing
            reasons = "; ".join(f"{n} x {reason}" for reason, n in left_out.most_common(5))
            raise ReleaseError(f"no image is released ({reasons}): see reports/qa.json for why QA failed them, and "
                               "loosen the qa thresholds (or set a check's action to flag) if they are too strict")
        ctx.release.mkdir(parents=True, exist_ok=True)
        write_release(ctx.work("ingest").parent, ctx.release, ctx.params, verdicts.human_test(ctx.root, ctx.params),
                      workers=ctx.params["executor"]["build_workers"], progress=ctx.progress)


def records(ctx: Context) -> Iterator[tuple[str, dict]]:
    """``(split, record)`` per released image, in part order (deterministic): the batches build
    writes, as dicts (for benchmarks and callers; build itself never makes them)."""
    corrections = verdicts.human_test(ctx.root, ctx.params)
    for index in parts.list_parts(ctx.work("ingest")):
        yield from to_records(join_part(ctx.work("ingest").parent, index, corrections))


STAGE = BuildStage()
