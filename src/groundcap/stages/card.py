"""Stage ``card``: the changelog, the plots and the dataset card from the records, then the checksum manifest."""

from __future__ import annotations

import copy
import json
from collections import Counter

from groundcap import parts, sample, versions
from groundcap.audit import verdicts
from groundcap.builders import SPLITS, write_manifest
from groundcap.stage import Context, Stage


class CardStage(Stage):
    name = "card"
    help = "Write the dataset card release/README.md from the records, then checksums.json."
    annotators = ("tag", "segment", "caption_regions", "caption_scene")  # the backends they ran with, for the card
    inputs = (*annotators, "ingest", "split")  # and the licence of each released image
    params = ("source", "part_size", "profile", "ingest", "tag", "segment", "caption_regions", "caption_scene",
              "crosscheck", "qa", "dedup", "split", "build", "audit", "release")  # it states every setting, hashed
    deps = ("release/data", "release/regions", "release/wds", "release/coco", "reports/qa.json", "reports/dedup.json",
            "audits")
    outs = ("release/README.md", "release/changelog.json", "release/plots", "release/checksums.json")

    def run(self, ctx: Context) -> None:
        from groundcap.dataset_card import write_card  # matplotlib and datasets: only when a card is written
        from groundcap.dataset_card.plots import write_plots

        params = copy.deepcopy(ctx.params)
        if params["source"] == sample.PREFIX and not params["release"].get("sources"):
            params["release"]["sources"] = "Images bundled with scikit-image:\n\n" + sample.licenses_markdown()
        qa_summary = json.loads((ctx.reports / "qa.json").read_text())
        qa_summary["dedup"] = json.loads((ctx.reports / "dedup.json").read_text())
        gate = verdicts.gate(ctx.root, ctx.params)
        qa_summary["audit"] = {**gate.summary, "message": gate.message}
        changelog = versions.changelog(ctx.release, params["release"])
        versions.write_changelog(ctx.release, changelog)
        write_card(ctx.release, params, stages=[(s.name, s.help) for s in ctx.stages],
                   provenance=self.provenance(ctx), qa_summary=qa_summary, changelog=changelog,
                   plots=write_plots(ctx.release, SPLITS), licenses=self.licenses(ctx))
        write_manifest(ctx.release)

    def provenance(self, ctx: Context) -> dict[str, list[dict]]:
        """The backends each annotation stage ran with (identical on every row of a stage)."""
        out = {}
        for stage in self.annotators:
            rows = parts.read_part(ctx.work(stage), parts.list_parts(ctx.work(stage))[0], ["provenance"])
            stamp = rows[0]["provenance"] if rows else []
            out[stage] = stamp if isinstance(stamp, list) else [stamp]
        return out

    def licenses(self, ctx: Context) -> dict[str | None, int]:
        """Released images per licence the source stated (None: not stated), part by part."""
        counts: Counter[str | None] = Counter()
        for index in parts.list_parts(ctx.work("split")):
            released = {r["image_id"] for r in parts.read_part(ctx.work("split"), index, ["image_id", "split"])
                        if r["split"]}
            counts.update(r["license"] for r in parts.read_part(ctx.work("ingest"), index, ["image_id", "license"])
                          if r["image_id"] in released)
        return dict(counts)


STAGE = CardStage()
