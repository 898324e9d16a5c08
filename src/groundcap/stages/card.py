"""Stage ``card``: the changelog, the plots, the dataset card and croissant.json from the records, then the
checksum manifest."""

from __future__ import annotations

import copy
import json

from groundcap import licenses
from groundcap.audit import verdicts
from groundcap.builders import SPLITS, write_manifest
from groundcap.pipeline import order
from groundcap.pipeline.stage import Context, Stage
from groundcap.releases import versions
from groundcap.sources import sample
from groundcap.storage import parts


class CardStage(Stage):
    name = "card"
    annotators = ("tag", "segment", "caption_regions", "caption_scene", "redact")  # the backends they ran with
    inputs = (*annotators, "ingest", "split")  # and the licence of each released image
    # it states every setting, hashed
    param_keys = ("source", "part_size", "part_bytes", "profile", "ingest", "tag", "segment", "caption_regions",
                  "caption_scene", "crosscheck", "qa", "dedup", "split", "redact", "build", "audit", "release")
    deps = ("release/data", "release/regions", "release/wds", "release/coco", "reports/qa.json", "reports/dedup.json",
            "audits")
    outs = ("release/README.md", "release/croissant.json", "release/changelog.json", "release/plots",
            "release/checksums.json")

    def run(self, ctx: Context) -> None:
        from groundcap.dataset_card import write_card  # matplotlib and datasets: only when a card is written
        from groundcap.dataset_card.croissant import write_croissant
        from groundcap.dataset_card.plots import write_plots
        from groundcap.evaluate import accuracy  # MiniLM: only when a release has a human_test split

        params = copy.deepcopy(ctx.params)
        if params["source"] == sample.PREFIX and not params["release"].get("sources"):
            params["release"]["sources"] = "Images bundled with scikit-image:\n\n" + sample.licenses_markdown()
        qa_summary = json.loads((ctx.reports / "qa.json").read_text())
        qa_summary["dedup"] = json.loads((ctx.reports / "dedup.json").read_text())
        gate = verdicts.gate(ctx.root, ctx.params)
        qa_summary["audit"] = {**gate.summary, "message": gate.message}
        qa_summary["engine_accuracy"] = accuracy.accuracy(ctx.root / "work", ctx.release)
        changelog = versions.changelog(ctx.release, params["release"])
        versions.write_changelog(ctx.release, changelog)
        stages, provenance = list(order.ORDER), self.provenance(ctx)
        stated = licenses.released(ctx.root / "work")
        write_card(ctx.release, params, stages=stages, provenance=provenance, qa_summary=qa_summary,
                   changelog=changelog, plots=write_plots(ctx.release, SPLITS), licenses=stated)
        write_croissant(ctx.release, params, stages=stages, provenance=provenance, qa_summary=qa_summary,
                        licenses=stated)
        write_manifest(ctx.release)

    def provenance(self, ctx: Context) -> dict[str, list[dict]]:
        """The backends each annotation stage ran with (identical on every row of a stage)."""
        out = {}
        for stage in self.annotators:
            rows = parts.read_part(ctx.work(stage), parts.list_parts(ctx.work(stage))[0], ["provenance"])
            stamp = rows[0]["provenance"] if rows else []
            out[stage] = stamp if isinstance(stamp, list) else [stamp]
        return out



STAGE = CardStage()
