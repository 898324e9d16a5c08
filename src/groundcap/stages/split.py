"""Stage ``split``: every releasable image gets a split, whole near-duplicate groups at a time.

An image is released when QA passed it and dedup kept it. Images people audited and accepted (or
corrected) form ``human_test``; the rest of their near-duplicate groups stay out of the release, so
nothing the audit saw leaks into training. Everything else is split by group hash
(``splits.assign``). Every image not released gets its reason.
"""

from __future__ import annotations

from groundcap import parts, schema, splits
from groundcap.audit import verdicts
from groundcap.engine import Context


def run(ctx: Context) -> None:
    section = ctx.params["split"]
    indices = parts.list_parts(ctx.work("qa"))
    rows = {}
    for i in indices:
        for qa, dd in zip(parts.read_part(ctx.work("qa"), i, ["image_id", "passed"]),
                          parts.read_part(ctx.work("dedup"), i, ["image_id", "kept", "group", "reason"]), strict=True):
            if qa["image_id"] != dd["image_id"]:
                raise RuntimeError(f"part {i} of work/dedup is out of step with work/qa; rerun dedup")
            rows[qa["image_id"]] = {**qa, **dd}
    audited = verdicts.load(ctx.root, ctx.params)
    human = {i for i, r in rows.items() if r["passed"] and r["kept"] and verdicts.is_accepted(audited.get(i))}
    human_groups = {rows[i]["group"] for i in human}
    reasons = {i: _reason(r, audited.get(i), human_groups) for i, r in rows.items()}
    drawn = {i: r["group"] for i, r in rows.items() if reasons[i] is None and i not in human}
    assignment = splits.assign(drawn, int(section["seed"]), section["fractions"])
    assignment.update({i: (splits.HUMAN_TEST, None) for i in human})

    out = parts.reset_dir(ctx.work("split"))
    for index in indices:
        table = []
        for r in parts.read_part(ctx.work("qa"), index, ["image_id"]):
            image_id = r["image_id"]
            split, key = assignment.get(image_id, (None, None))
            table.append({"image_id": image_id, "split": split, "key": key, "group": rows[image_id]["group"],
                          "reason": reasons[image_id]})
        parts.write_part(table, schema.SPLIT, out, index)


def _reason(row: dict, verdict: dict | None, human_groups: set[str]) -> str | None:
    if not row["passed"]:
        return "failed QA"
    if not row["kept"]:
        return row["reason"] or "dropped by dedup"
    if verdict is not None and not verdicts.is_accepted(verdict):
        return "rejected by human audit"
    if verdict is None and row["group"] in human_groups:
        return "near-duplicate of a human-test image"
    return None
