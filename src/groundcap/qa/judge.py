"""QA's verdict on one image, under one ``qa`` params section: each region's (structural checks, a part's
link to its entity, the pixel evidence of its captions' claims, the cross-model consistency decision),
then the image's, with the share of its pixels the kept entities cover (``coverage``).

The qa stage (``stages/qa.py``) runs it on each image's records; here it needs no pipeline to test.
Each check whose params say ``flag`` is recorded without failing (``checks.split_by_action``).
"""

from __future__ import annotations

from groundcap import grounding
from groundcap.ingest import decode_rgb
from groundcap.qa import checks, claims, consistency, evidence


class Judge:
    """Rows of ``schema.QA``: ``image`` for an image's records, ``failed`` for an image a stage failed on."""

    def __init__(self, section: dict) -> None:
        self.section = section
        self.options = evidence.Options.from_params(section["evidence"])

    def _decide(self, agreement: dict | None, cross: dict, min_similarity: float) -> dict | None:
        return consistency.decide(agreement, cross["model_a"], cross["model_b"], min_similarity,
                                  self.section["consistency"]["min_claim_agreement"])

    def image(self, image_row: dict, region_row: dict, caption_row: dict, scene_row: dict, cross_row: dict) -> dict:
        """An image's row from its records (ingest, segment, caption_regions, caption_scene, crosscheck)."""
        section, options = self.section, self.options
        evidence_action, agree = section["evidence"]["action"], section["consistency"]
        h, w = image_row["height"], image_row["width"]
        image = decode_rgb(image_row["bytes"])
        regions = region_row["regions"]
        captions = {c["region_id"]: c for c in caption_row["captions"]}
        agreements = {r["region_id"]: r["agreement"] for r in cross_row["regions"]}
        by_id = {r["region_id"]: r for r in regions}
        measures = evidence.Measures(image, regions, options)
        region_verdicts = []
        for region in regions:
            rid, caption = region["region_id"], captions.get(region["region_id"])
            text = claims.caption_text(caption["short"], caption["detailed"]) if caption else None
            region_claims = evidence.check_region(text, image, region, regions, options, measures) if caption else []
            given = evidence.check_class(text, region) if caption else None
            decision = self._decide(agreements.get(rid), cross_row, agree["min_similarity"])
            fail, flag = checks.split_by_action({
                "caption contradicted by pixels": (not evidence.contradicted(region_claims), evidence_action),
                **({"caption names another class than the source's": (given["verdict"] != "contradicted",
                                                                      section["given_class"])} if given else {}),
                **({"models disagree on the caption": (decision["passed"], agree["action"])} if decision else {}),
            })
            structural = {**checks.region_checks(region, caption, h, w, section["min_region_area_frac"],
                                                 section["require_unique_captions"]),
                          **checks.part_link(region, by_id)}
            v = checks.verdict({**structural, **fail}, flag)
            region_verdicts.append({"region_id": rid, "score": v.score, "passed": v.passed, "reasons": v.reasons,
                                    "evidence": region_claims + ([given] if given else []), "consistency": decision})
        failed_ids = {r["region_id"] for r in region_verdicts if not r["passed"]}
        for region, verdict in zip(regions, region_verdicts, strict=True):
            if region["parent_id"] is not None and region["parent_id"] in failed_ids:  # parts go with their entity
                verdict["passed"] = False
                verdict["reasons"] = [*verdict["reasons"], "parent region failed"]
        kept = {r["region_id"] for r in region_verdicts if r["passed"]}
        every = {r["region_id"] for r in region_verdicts}

        scene_text = scene_row["scene_caption"] or ""
        scene_claims = evidence.check_scene(scene_text, image, regions, options, measures) if scene_text else []
        scene_decision = self._decide(cross_row["scene"], cross_row, agree["min_scene_similarity"])
        fail, flag = checks.split_by_action({
            "scene caption contradicted by pixels": (not evidence.contradicted(scene_claims), evidence_action),
            **({"models disagree on the scene caption": (scene_decision["passed"], agree["action"])}
               if scene_decision else {}),
        })
        covered = checks.coverage(regions, kept, h, w)
        gate = ({"entities cover less than qa.min_coverage": covered >= section["min_coverage"]}
                if section["min_coverage"] > 0 else {})  # 0 (the default) measures coverage without judging it
        image_verdict = checks.verdict({**checks.image_checks(scene_text, kept, every, section["min_regions"]),
                                        **gate, **fail}, flag)
        region_mean = sum(r["score"] for r in region_verdicts) / len(region_verdicts) if region_verdicts else 0.0
        return {
            "image_id": image_row["image_id"],
            "score": round(image_verdict.score * region_mean, 4),
            "passed": image_verdict.passed,
            "reasons": image_verdict.reasons,
            "coverage": covered,
            "regions": region_verdicts,
            "scene_caption": grounding.unwrap(scene_text, kept),
            "scene_evidence": scene_claims,
            "scene_consistency": scene_decision,
        }

    def failed(self, image_id: str, message: str) -> dict:
        """The row of an image a stage failed on: failed, the stage's error its reason (``schema.QA`` has no
        ``error`` column)."""
        return {"image_id": image_id, "score": 0.0, "passed": False, "reasons": [message], "coverage": None,
                "regions": [],
                "scene_caption": None, "scene_evidence": [], "scene_consistency": None}
