"""Stage ``split``: every image that passed QA gets train/validation/test (``splits.assign``)."""

from __future__ import annotations

from groundcap import parts, schema, splits
from groundcap.engine import Context


def run(ctx: Context) -> None:
    section = ctx.params["split"]
    qa_dir = ctx.work("qa")
    indices = parts.list_parts(qa_dir)
    passed = [r["image_id"] for i in indices for r in parts.read_part(qa_dir, i, ["image_id", "passed"]) if r["passed"]]
    assignment = splits.assign(passed, int(section["seed"]), section["fractions"])
    out = parts.reset_dir(ctx.work("split"))
    for index in indices:
        rows = []
        for r in parts.read_part(qa_dir, index, ["image_id"]):
            split, key = assignment.get(r["image_id"], (None, None))
            rows.append({"image_id": r["image_id"], "split": split, "key": key})
        parts.write_part(rows, schema.SPLIT, out, index)
