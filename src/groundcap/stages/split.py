"""Stage ``split``: every releasable image gets a split, whole groups at a time.

An image is released when QA passed it and dedup kept it. Groups join near-duplicate clusters
(``work/dedup``) and the source groups ``split.group_pattern`` declares. The images of the previous
release (``release.previous``) keep their splits; new images people audited and accepted (or
corrected) form ``human_test`` (exactly ``audit.human_test_size`` of them when set and enough exist;
too few is said on stderr and in reports/audit.json); the rest are split by group hash
(``splits.assign``). Every image not released gets its reason.
"""

from __future__ import annotations

import sys

from groundcap import schema, splits
from groundcap.audit import verdicts
from groundcap.errors import StageInputError
from groundcap.params.validation import Int, Mapping_, Num, Regex, is_num
from groundcap.pipeline.stage import Context, Stage
from groundcap.releases import diff
from groundcap.storage import parts


class SplitStage(Stage):
    name = "split"
    inputs = ("ingest", "qa", "dedup")
    param_keys = ("split", "audit", "release.previous")
    deps = ("audits",)
    outs = ("work/split",)
    param_types = {"split": {
        "seed": Int(),
        "fractions": Mapping_(Num(0, 1), keys=splits.SPLITS, nullable=True, hint="of split to fraction",
                              override="replace"),
        "sizes": Mapping_(Int(0), keys=splits.HELD_OUT, nullable=True, hint="of split to image count"),
        "group_pattern": Regex(),
    }}

    def check_params(self, params, problems):
        """Exactly one of fractions and sizes; fractions sum to 1."""
        section = params.get("split")
        if not isinstance(section, dict):
            return
        fractions, sizes = section.get("fractions"), section.get("sizes")
        if (fractions is None) == (sizes is None):
            problems.append("params: split.fractions and split.sizes are both "
                            f"{'null' if fractions is None else 'set'}; set exactly one of them (the other to null)")
        if isinstance(fractions, dict) and all(is_num(v) for v in fractions.values()):
            total = sum(fractions.values())
            if abs(total - 1) > 1e-6:
                problems.append(f"params: split.fractions sum to {total:g}; they must sum to 1")

    def run(self, ctx: Context) -> None:
        section = ctx.params["split"]
        indices = parts.list_parts(ctx.work("qa"))
        rows, paths = {}, {}
        for i in indices:
            tables = (parts.read_part(ctx.work("qa"), i, ["image_id", "passed"]),
                      parts.read_part(ctx.work("dedup"), i, ["image_id", "kept", "group", "reason"]),
                      parts.read_part(ctx.work("ingest"), i, ["image_id", "source_path"]))
            for qa, dd, image in zip(*tables, strict=True):
                if not qa["image_id"] == dd["image_id"] == image["image_id"]:
                    raise StageInputError(f"part {i} of work/dedup or work/ingest is out of step with work/qa; "
                                          "rerun them")
                rows[qa["image_id"]] = {**qa, **dd}
                paths[qa["image_id"]] = image["source_path"]
        audited = verdicts.load(ctx.root, ctx.params)
        reasons = {i: _reason(r, audited.get(i)) for i, r in rows.items()}
        releasable = {i: r["group"] for i, r in rows.items() if reasons[i] is None}
        groups = splits.join_groups(releasable, splits.declared_groups(paths, section.get("group_pattern")))
        assignment = splits.assign(
            groups,
            section,
            pinned=_previous_splits(ctx.params["release"].get("previous")),
            human={i for i in groups if verdicts.is_accepted(audited.get(i))},
            human_size=ctx.params["audit"]["human_test_size"],
        )
        wanted = ctx.params["audit"]["human_test_size"]
        held = sum(a.split == splits.HUMAN_TEST for a in assignment.values())
        if wanted is not None and held < wanted:
            print(f"split: human_test holds {held} of the {wanted} images audit.human_test_size asks for: too few "
                  "audited images were accepted; `groundcap audit export` draws images not judged yet, review them "
                  "and `groundcap audit import` the verdicts", file=sys.stderr)

        out = parts.reset_dir(ctx.work("split"))
        for index in indices:
            table = []
            for r in parts.read_part(ctx.work("qa"), index, ["image_id"]):
                image_id = r["image_id"]
                split, key, reason = assignment.get(image_id, (None, None, reasons[image_id]))
                table.append({"image_id": image_id, "split": split, "key": key,
                              "group": groups.get(image_id, rows[image_id]["group"]), "reason": reason})
            parts.write_part(table, schema.SPLIT, out, index)


def _previous_splits(previous: str | None) -> dict[str, str]:
    """``image_id -> split`` of the release this one follows (none: nothing is pinned)."""
    return {image: entry.split for image, entry in diff.index(previous).items()} if previous else {}


def _reason(row: dict, verdict: dict | None) -> str | None:
    if not row["passed"]:
        return "failed QA"
    if not row["kept"]:
        return row["reason"] or "dropped by dedup"
    if verdict is not None and not verdicts.is_accepted(verdict):
        return "rejected by human audit"
    return None


STAGE = SplitStage()
