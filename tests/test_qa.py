"""QA's decision plumbing: checks that fail or only flag, the summary and its DVC plot tables."""

from __future__ import annotations

import csv
import json

import pytest

from groundcap import params
from groundcap.params import validation
from groundcap.qa import checks
from groundcap.qa.report import Summary


def test_a_failed_check_fails_and_a_failed_flag_only_flags():
    fail, flag = checks.split_by_action({"caption contradicted by pixels": (False, "flag"),
                                         "models disagree on the caption": (False, "fail"),
                                         "fine": (True, "fail")})
    v = checks.verdict({"mask size differs from image": True, **fail}, flag)
    assert not v.passed and v.score == pytest.approx(2 / 3, abs=1e-4)
    assert v.reasons == ["models disagree on the caption", "flagged: caption contradicted by pixels"]
    only_flagged = checks.verdict({"fine": True}, flag)
    assert only_flagged.passed and only_flagged.reasons == ["flagged: caption contradicted by pixels"]


def test_an_unknown_action_is_refused_at_load():
    p = params.defaults()
    p["qa"]["consistency"]["action"] = "drop"
    with pytest.raises(params.ParamsError, match="qa.consistency.action is 'drop'; allowed: fail, flag"):
        validation.check(p)


def _region(rid, passed, score, reasons=(), evidence=(), similarity=None):
    consistency = None if similarity is None else {
        "score": similarity, "passed": similarity >= 0.5, "similarity": similarity, "claim_agreement": None,
        "model_a": "a", "model_b": "b", "reason": ""}
    return {"region_id": rid, "passed": passed, "score": score, "reasons": list(reasons),
            "evidence": list(evidence), "consistency": consistency}


def test_summary_counts_reasons_flags_claims_and_writes_plot_tables(tmp_path):
    red = {"kind": "color", "claim": "red", "verdict": "contradicted", "detail": ""}
    left = {"kind": "position", "claim": "on the left", "verdict": "supported", "detail": ""}
    rows = [
        {"passed": True, "reasons": ["flagged: scene caption contradicted by pixels"], "scene_evidence": [red],
         "regions": [_region(0, True, 1.0, evidence=[left], similarity=0.81),
                     _region(1, False, 0.5, ["models disagree on the caption"], [red], similarity=0.2)]},
        {"passed": False, "reasons": ["segment: ValueError: boom"], "scene_evidence": [], "regions": []},
    ]
    summary = Summary()
    summary.add(rows, lambda r: "segment error" if r.startswith("segment: ") else r)
    summary.write(tmp_path)
    report = json.loads((tmp_path / "qa.json").read_text())
    assert report["images"] == {"passed": 1, "failed": 1}
    assert report["regions"] == {"passed": 1, "failed": 1}
    assert report["image_failure_reasons"] == {"segment error": 1}
    assert report["region_failure_reasons"] == {"models disagree on the caption": 1}
    assert report["flags"] == {"scene caption contradicted by pixels": 1}
    assert report["evidence"] == {
        "color": {"parsed": 2, "supported": 0, "contradicted": 2, "unverifiable": 0},
        "position": {"parsed": 1, "supported": 1, "contradicted": 0, "unverifiable": 0}}
    assert report["consistency"] == {"regions_checked": 2, "regions_agreeing": 1, "mean_similarity": 0.505}

    def table(name):
        with (tmp_path / "plots" / name).open() as f:
            return list(csv.DictReader(f))

    scores = {r["score"]: int(r["regions"]) for r in table("region_scores.csv")}
    assert len(scores) == 10 and scores["0.9-1.0"] == 1 and scores["0.5-0.6"] == 1
    similarity = {r["similarity"]: int(r["regions"]) for r in table("similarity.csv")}
    assert similarity["0.8-0.9"] == 1 and similarity["0.2-0.3"] == 1
    reasons = {r["reason"]: int(r["count"]) for r in table("rejections.csv")}
    assert reasons == {"image: segment error": 1, "region: models disagree on the caption": 1,
                       "flag: scene caption contradicted by pixels": 1}
