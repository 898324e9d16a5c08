"""Stage ``qa``: per-region and per-image verdicts (``work/qa``), ``reports/qa.json`` and its plots.

A region passes the structural checks (``qa.checks``), the pixel-evidence checks of its captions'
claims (``qa.evidence``) and the cross-model consistency decision (``qa.consistency`` over
``work/crosscheck``); each check whose params say ``flag`` is recorded without failing. Regions that
fail are left out of the release; references to them in the scene caption are unwrapped to plain
text so the caption never points at a missing region. Images that fail, or that a stage failed on,
are left out with their reasons. The verdicts are ``qa.judge``'s; this module runs it over the parts
and sums up every part's verdicts.
"""

from __future__ import annotations

from groundcap import schema
from groundcap.params.validation import Bool, Enum, Fraction, Int, Num
from groundcap.pipeline import order
from groundcap.pipeline.stage import Context, MapStage
from groundcap.qa.judge import Judge
from groundcap.qa.report import Summary
from groundcap.storage import parts


class QaStage(MapStage):
    name = "qa"
    inputs = ("ingest", "segment", "caption_regions", "caption_scene", "crosscheck")
    columns = {"ingest": ("bytes", "height", "width")}
    param_keys = ("qa",)
    schema = schema.QA
    metrics = ("reports/qa.json",)
    plots = ("reports/plots",)
    param_types = {"qa": {
        "min_region_area_frac": Fraction(),
        "min_regions": Int(0),
        "min_coverage": Fraction(),
        "require_unique_captions": Bool(),
        "given_class": Enum("fail", "flag"),
        "evidence": {
            "action": Enum("fail", "flag"),
            "min_color_share": Fraction(),
            "share_tolerance": Fraction(),
            "min_text_similarity": Fraction(),
        },
        "consistency": {
            "action": Enum("fail", "flag"),
            "min_similarity": Num(-1, 1),  # a cosine
            "min_claim_agreement": Fraction(),
            "min_scene_similarity": Num(-1, 1),
        },
    }}

    def setup(self, params):
        self.judge = Judge(params["qa"])

    def process(self, image_row, region_row, caption_row, scene_row, cross_row):
        return self.judge.image(image_row, region_row, caption_row, scene_row, cross_row)

    def error_row(self, image_id, message):
        """QA's table has no ``error`` column: the stage's error becomes the image's failing reason."""
        return self.judge.failed(image_id, message)

    def finish(self, ctx: Context) -> None:
        """``reports/qa.json`` and the plots, from every part (computed now or on an earlier run)."""
        out, summary = ctx.work(self.name), Summary()
        for index in parts.list_parts(out):
            summary.add(parts.read_part(out, index, ["passed", "reasons", "coverage", "regions", "scene_evidence"]),
                        _reason_kind)
        summary.write(ctx.reports)


def _reason_kind(reason: str) -> str:
    """Stage errors carry a per-image message (``<stage>: ...``); the summary counts them by stage."""
    stage, sep, _ = reason.partition(": ")
    return f"{stage} error" if sep and stage in order.HELP else reason


STAGE = QaStage()
