"""Stage ``card``: the changelog, the plots and the dataset card from the records, then the checksum manifest."""

from __future__ import annotations

import copy
import json

from groundcap import parts, sample, versions
from groundcap.audit import verdicts
from groundcap.builders import SPLITS, write_manifest
from groundcap.dataset_card import write_card
from groundcap.dataset_card.plots import write_plots
from groundcap.engine import Context
from groundcap.stages import ANNOTATION_STAGES


def run(ctx: Context) -> None:
    params = copy.deepcopy(ctx.params)
    if params["source"] == sample.PREFIX and not params["release"].get("sources"):
        params["release"]["sources"] = "Images bundled with scikit-image:\n\n" + sample.licenses_markdown()
    qa_summary = json.loads((ctx.reports / "qa.json").read_text())
    qa_summary["dedup"] = json.loads((ctx.reports / "dedup.json").read_text())
    gate = verdicts.gate(ctx.root, ctx.params)
    qa_summary["audit"] = {**gate.summary, "message": gate.message}
    changelog = versions.changelog(ctx.release, params["release"])
    versions.write_changelog(ctx.release, changelog)
    write_card(ctx.release, params, provenance=provenance(ctx), qa_summary=qa_summary, changelog=changelog,
               plots=write_plots(ctx.release, SPLITS))
    write_manifest(ctx.release)


def provenance(ctx: Context) -> dict[str, list[dict]]:
    """The backends each annotation stage ran with (identical on every row of a stage)."""
    out = {}
    for stage in ANNOTATION_STAGES:
        rows = parts.read_part(ctx.work(stage), parts.list_parts(ctx.work(stage))[0], ["provenance"])
        stamp = rows[0]["provenance"] if rows else []
        out[stage] = stamp if isinstance(stamp, list) else [stamp]
    return out
