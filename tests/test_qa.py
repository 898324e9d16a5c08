"""QA's decision plumbing: checks that fail or only flag, the summary and its DVC plot tables."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from groundcap import colors, masks, params
from groundcap.params import validation
from groundcap.pipeline import order
from groundcap.qa import checks
from groundcap.qa.judge import Judge
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
         "coverage": 0.85,
         "regions": [_region(0, True, 1.0, evidence=[left], similarity=0.81),
                     _region(1, False, 0.5, ["models disagree on the caption"], [red], similarity=0.2)]},
        {"passed": False, "reasons": ["segment: ValueError: boom"], "scene_evidence": [], "regions": [],
         "coverage": None},
        {"passed": False, "reasons": ["fewer regions than qa.min_regions"], "scene_evidence": [], "regions": [],
         "coverage": 0.0},
    ]
    summary = Summary()
    summary.add(rows, lambda r: "segment error" if r.startswith("segment: ") else r)
    summary.write(tmp_path)
    report = json.loads((tmp_path / "qa.json").read_text())
    assert report["images"] == {"passed": 1, "failed": 2}
    assert report["regions"] == {"passed": 1, "failed": 1}
    assert report["image_failure_reasons"] == {"segment error": 1, "fewer regions than qa.min_regions": 1}
    assert {k: v for k, v in report["coverage"].items() if k != "histogram"} == {"images": 2, "mean": 0.425,
                                                                               "min": 0.0}
    assert report["coverage"]["histogram"]["0.8-0.9"] == report["coverage"]["histogram"]["0.0-0.1"] == 1
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
    assert reasons == {"image: segment error": 1, "image: fewer regions than qa.min_regions": 1,
                       "region: models disagree on the caption": 1, "flag: scene caption contradicted by pixels": 1}


def _records(left_caption: str, right_caption: str, scene: str) -> tuple[dict, ...]:
    """One image's records as QA reads them: a red left half and a blue right half, one region each."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = (220, 20, 20)
    pixels[:, 40:] = (20, 20, 220)
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, format="PNG")
    regions = []
    for rid, x in ((0, 0), (1, 40)):
        mask = np.zeros((40, 80), np.uint8)
        mask[:, x:x + 40] = 1
        regions.append({"region_id": rid, "segmentation": masks.encode(mask), "bbox": [float(x), 0.0, 40.0, 40.0],
                        "area": 1600, "label": "half", "granularity": "object", "parent_id": None})
    captions = [{"region_id": rid, "short": text, "detailed": text, "verdict": "accepted", "unique": True}
                for rid, text in ((0, left_caption), (1, right_caption))]
    return ({"image_id": "img", "height": 40, "width": 80, "bytes": data.getvalue()},
            {"regions": regions}, {"captions": captions}, {"scene_caption": scene},
            {"regions": [{"region_id": 0, "agreement": None}, {"region_id": 1, "agreement": None}], "scene": None,
             "model_a": None, "model_b": None})


def test_summary_replaces_its_reports_and_never_writes_into_a_file_dvc_hardlinked_to_its_cache(tmp_path):
    """With ``cache.type`` hardlink (.dvc/config) a checked-out report shares its inode with DVC's cache: a
    rewrite must be a new file renamed over it, or `groundcap qa` outside `dvc repro` corrupts the cache."""
    reports, cache = tmp_path / "reports", tmp_path / "cache"
    (reports / "plots").mkdir(parents=True)
    cache.mkdir()
    names = ["qa.json", "plots/region_scores.csv", "plots/similarity.csv", "plots/rejections.csv"]
    for k, name in enumerate(names):
        (cache / str(k)).write_text("cached\n")
        os.link(cache / str(k), reports / name)
    Summary().write(reports)
    assert [(cache / str(k)).read_text() for k in range(len(names))] == ["cached\n"] * len(names)
    assert all((reports / name).stat().st_nlink == 1 for name in names)


def test_the_judge_fails_a_caption_the_pixels_contradict_or_flags_it():
    section = copy.deepcopy(params.defaults()["qa"])
    row = Judge(section).image(*_records("a red half", "a red half", "<r0>a red half</r0> beside <r1>a half</r1>"))
    assert [r["passed"] for r in row["regions"]] == [True, False] and row["passed"]  # one region is enough
    assert row["regions"][1]["reasons"] == ["caption contradicted by pixels"]
    assert row["scene_caption"] == "<r0>a red half</r0> beside a half"  # the failed region's reference unwrapped
    section["min_regions"] = 2
    assert Judge(section).image(*_records("a red half", "a red half", "<r0>a red half</r0>"))["reasons"] == [
        "fewer regions than qa.min_regions"]
    section["evidence"]["action"] = "flag"
    flagged = Judge(section).image(*_records("a red half", "a red half", "<r0>a red half</r0>"))
    assert flagged["passed"] and flagged["regions"][1]["reasons"] == ["flagged: caption contradicted by pixels"]
    assert Judge(section).image(*_records("a red half", "a blue half", "<r0>a red half</r0>"))["score"] == 1.0


def test_the_judge_measures_each_regions_colours_once_for_its_caption_and_the_scenes():
    """The colour naming was most of QA's time: a region the scene caption names again is not measured again."""
    records = _records("a red half", "a blue half", "<r0>a red half</r0> beside <r1>a blue half</r1>")
    with mock.patch.object(colors, "color_shares", wraps=colors.color_shares) as shares:
        row = Judge(copy.deepcopy(params.defaults()["qa"])).image(*records)
    assert row["passed"] and [v["verdict"] for v in row["scene_evidence"] if v["kind"] == "color"] == ["supported"] * 2
    assert shares.call_count == 2


def test_the_qa_stage_judges_in_its_own_methods_not_ones_setup_patches_in():
    stage = type(order.stage("qa"))()
    stage.setup(params.subset(params.defaults(), ("qa", "executor")))
    assert not {"process", "error_row"} & set(vars(stage))
    assert stage.process(*_records("a red half", "a blue half", "<r0>a red half</r0>"))["passed"]
    assert stage.error_row("img", "tag: OSError: boom") == {
        "image_id": "img", "score": 0.0, "passed": False, "reasons": ["tag: OSError: boom"], "coverage": None,
        "regions": [], "scene_caption": None, "scene_evidence": [], "scene_consistency": None}


def test_the_judge_measures_how_much_the_kept_entities_cover_and_can_gate_on_it():
    """Coverage counts kept entities only (a failed region's pixels are uncovered); ``qa.min_coverage`` 0
    measures without judging (scores as before), above 0 fails an image under it."""
    section = copy.deepcopy(params.defaults()["qa"])
    both = Judge(section).image(*_records("a red half", "a blue half", "<r0>a red half</r0>"))
    one = Judge(section).image(*_records("a red half", "a red half", "<r0>a red half</r0>"))
    assert (both["coverage"], one["coverage"]) == (1.0, 0.5) and one["passed"] and one["score"] == 0.9445
    section["min_coverage"] = 0.75
    gated = Judge(section).image(*_records("a red half", "a red half", "<r0>a red half</r0>"))
    assert not gated["passed"] and gated["reasons"] == ["entities cover less than qa.min_coverage"]
    assert Judge(section).image(*_records("a red half", "a blue half", "<r0>a red half</r0>"))["passed"]
    assert Judge(section).failed("img", "segment: boom")["coverage"] is None


def test_the_judge_checks_each_part_names_an_entity_of_its_image_as_parent():
    """A part links to an entity whose box holds it; parts add nothing to coverage (they lie in their entity)."""
    records = _records("a red half", "a blue half", "<r0>a red half</r0>")
    left = records[1]["regions"][0]
    mask = np.zeros((40, 80), np.uint8)
    mask[10:20, 10:20] = 1

    def part(rid, parent_id, bbox=(10.0, 10.0, 10.0, 10.0)):
        return {**left, "region_id": rid, "segmentation": masks.encode(mask), "bbox": list(bbox), "area": 100,
                "granularity": "part", "parent_id": parent_id}

    records[1]["regions"] += [part(2, 0), part(3, 9), part(4, 2), part(5, 1)]
    records[2]["captions"] += [{**records[2]["captions"][0], "region_id": rid} for rid in (2, 3, 4, 5)]
    records[4]["regions"] += [{"region_id": rid, "agreement": None} for rid in (2, 3, 4, 5)]
    row = Judge(copy.deepcopy(params.defaults()["qa"])).image(*records)
    reasons = {r["region_id"]: r["reasons"] for r in row["regions"]}
    assert reasons[2] == [] and row["coverage"] == 1.0
    assert reasons[3] == ["part without a parent entity", "part outside its parent"]
    assert reasons[4] == ["part without a parent entity"]  # a part of a part
    assert "part outside its parent" in reasons[5]  # region 1 is the right half; the part lies in the left
    entity_with_parent = {**left, "parent_id": 1}
    assert checks.part_link(entity_with_parent, {}) == {"entity has a parent": False}


def test_a_caption_naming_another_class_than_the_source_gave_is_a_recorded_disagreement():
    """DLC-SDP stage 1: a COCO region's category is its name. "a red cat" on a region COCO calls a dog is
    flagged (qa.given_class: flag), with the reason in the region's evidence and the report's flags; "a blue
    man" on a person agrees (an alias); with ``fail`` the cat region fails."""
    records = _records("a red cat", "a blue man", "<r0>a red cat</r0> beside <r1>a blue man</r1>")
    for region, label in zip(records[1]["regions"], ("dog", "person"), strict=True):
        region |= {"source": "given:coco", "label": label}
    section = copy.deepcopy(params.defaults()["qa"])
    row = Judge(section).image(*records)
    cat, man = row["regions"]
    assert cat["passed"] and cat["reasons"] == ["flagged: caption names another class than the source's"]
    assert {"kind": "label", "claim": "cat", "verdict": "contradicted", "detail": "the source's class is 'dog'"} in \
        cat["evidence"]
    assert man["reasons"] == [] and man["evidence"][-1]["verdict"] == "supported"
    summary = Summary()
    summary.add([row])
    assert summary.flags == {"caption names another class than the source's": 1}
    section["given_class"] = "fail"
    assert Judge(section).image(*records)["regions"][0]["reasons"] == ["caption names another class than the source's"]


@pytest.mark.parametrize(("source", "label", "caption", "verdict"), [
    ("given:coco", "potted plant", "a green plant in a pot", "supported"),  # the head word
    ("given:coco", "wall-other-merged", "two white walls", "supported"),  # COCO panoptic's stuff name
    ("given:coco", "dog", "a brown animal", "unverifiable"),  # a wider noun names no other class
    ("given:coco", "dog", "a cat on a sofa", "contradicted"),
    ("given:sa1b+vlm", "dog", "a cat", None),  # a crop tagger named it: no class was given
    ("felzenszwalb", "dog", "a cat", None),
])
def test_check_class_reads_the_class_in_the_captions_words(source, label, caption, verdict):
    from groundcap.qa import evidence

    found = evidence.check_class(caption, {"source": source, "label": label})
    assert (found and found["verdict"]) == verdict
