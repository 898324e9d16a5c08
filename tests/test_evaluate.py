"""groundcap eval: the metrics' properties on a hand-made split, the readers, the LLM judge over loopback HTTP."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fake_openai import FakeOpenAI, completion, user_text
from groundcap import grounding
from groundcap.evaluate import content, dlc, inputs, report
from groundcap.evaluate.inputs import Prediction, Reference, Region
from groundcap.evaluate.judges import Question, rule_verdict
from groundcap.evaluate.matching import iou

SCENE = ("A bright, quite colorful landscape image with 3 regions; its main colors are green (40%) and red (20%). "
         "It shows <r1>a brown dog</r1> on the left, <r2>a red car</r2> on the right and <r3>a green tree</r3> at the "
         "top. <r1>The brown dog</r1> is to the left of <r2>the red car</r2>. <r3>The green tree</r3> is above "
         "<r1>the brown dog</r1>. The scene feels calm and sunny.")
REGIONS = (Region(1, (10.0, 150.0, 100.0, 100.0), "dog", "a brown dog on the left. A brown dog lying on the left of "
                  "the image."),
           Region(2, (250.0, 100.0, 120.0, 80.0), "car", "a red car on the right. A red car parked on the right of the "
                  "image."),
           Region(3, (150.0, 0.0, 100.0, 140.0), "tree", "a green tree at the top. A tall green tree at the top of the "
                  "image."))
SIGN = Reference("img2", 200, 200, 'It shows <r5>a white sign reading "STOP"</r5> at the top and <r6>a blue sky</r6> '
                 "at the top. <r5>The white sign</r5> is below <r6>the blue sky</r6>.",
                 (Region(5, (50.0, 60.0, 60.0, 40.0), "sign", 'a white sign reading "STOP". A white sign at the top '
                         'of the image. It reads "STOP".'),
                  Region(6, (0.0, 0.0, 200.0, 70.0), "sky", "a blue sky at the top. A clear blue sky at the top of the "
                         "image.")))
REFS = [Reference("img1", 400, 300, SCENE, REGIONS), SIGN]


def perfect() -> dict[str, Prediction]:
    return {r.image_id: Prediction(r.image_id, r.scene_caption, {g.region_id: g.bbox for g in r.regions},
                                   {g.region_id: g.caption for g in r.regions}) for r in REFS}


def swap_colors(text: str) -> str:
    swap = {"brown": "red", "red": "green", "green": "brown", "white": "blue", "blue": "white"}  # among the regions
    return re.sub(r"\b(" + "|".join(swap) + r")\b", lambda m: swap[m.group(1)], text)


# --- rules, fast --------------------------------------------------------------------------------------


def test_content_reads_entities_attributes_relations_and_global_state():
    c = content.parse(SCENE, {1: (0, 0, 1, 1)})
    assert {k: e.tag for k, e in c.entities.items()} == {1: "dog", 2: "car", 3: "tree"}
    assert c.entities[1].box == (0.0, 0.0, 1.0, 1.0) and c.entities[2].box is None
    attrs = {(f.subject, f.value) for f in c.of("attribute")}
    assert {(1, ("color", "brown")), (1, ("position", (None, "left"))), (3, ("position", ("top", None)))} <= attrs
    assert all(f.subject != 1 or f.value != ("color", "red") for f in c.of("attribute"))  # "and <r3>" ends r2's clause
    assert {(f.subject, f.value[1], f.object) for f in c.of("relation")} == {(1, "left of", 2), (3, "above", 1)}
    glob = {f.value for f in c.of("global")}
    assert {("count", (3, "region")), ("color", "green"), ("state", "brightness", "bright"),
            ("sentence", "The scene feels calm and sunny.")} <= glob


def test_relations_are_checked_with_their_converse_and_opposite():
    ref = content.parse("<r1>A cat</r1> is to the left of <r2>a dog</r2>.")
    same = content.parse("<r7>The dog</r7> is to the right of <r8>the cat</r8>.")
    opposite = content.parse("<r7>The dog</r7> is to the left of <r8>the cat</r8>.")
    fact = ref.of("relation")[0]
    assert rule_verdict(Question(fact, same, 8, 7)) == rule_verdict(Question(fact, same, 8, 7))
    assert rule_verdict(Question(fact, same, 8, 7)).score == 1.0
    assert rule_verdict(Question(fact, opposite, 8, 7)).score == 0.0  # cat right of dog: contradicted, not stated


def test_attribute_verdicts_stated_missing_contradicted():
    target = content.region("a red car on the right")
    red, blue, left = (content.region(t).facts[1] for t in ("a red car", "a blue car", "a car on the left"))
    assert rule_verdict(Question(red, target, 0)).score == 1.0
    assert rule_verdict(Question(blue, target, 0)).score == 0.0
    assert rule_verdict(Question(left, target, 0)).score == 0.0
    assert rule_verdict(Question(red, content.region("a car"), 0)).score == 0.5  # not said either way


def test_inline_boxes_become_references_with_pixel_boxes():
    boxes = {g.region_id: g.bbox for g in REGIONS}
    inline = grounding.render_boxes(SCENE, boxes, 400, 300)
    text, got = inputs.from_inline_boxes(inline, 400, 300)
    assert [p for _, p in grounding.references(text)][:3] == ["a brown dog", "a red car", "a green tree"]
    assert len(got) == 3 and iou(got[0], boxes[1]) > 0.99  # the dog's three mentions are one entity
    assert grounding.references(text)[3] == (0, "The brown dog")
    text, got = inputs.from_inline_boxes("A blue motorcycle ([[0.50, 0.70, 0.83, 1.00]]) parked by a painted door "
                                         "of a big house [0.01, 0.40, 1.00, 0.98].", 100, 100)
    assert grounding.references(text) == [(0, "A blue motorcycle"), (1, "a big house")]
    assert got[0] == pytest.approx((50.0, 70.0, 33.0, 30.0))


def test_dlc_questions_take_negatives_from_other_regions():
    pos, neg = dlc.questions(REFS[0])[1]
    assert {f.value for f in pos} >= {("label", "dog"), ("color", "brown"), ("position", (None, "left"))}
    values = {f.value for f in neg}
    assert {("label", "car"), ("label", "tree"), ("color", "red"), ("color", "green"),
            ("position", (None, "right"))} <= values
    assert ("color", "brown") not in values and ("position", ("top", None)) not in values  # top is compatible with left


def test_predictions_files_are_read_and_checked(tmp_path):
    rows = [{"image_id": "img1", "scene_caption": "<r0>a dog</r0> on the left", "regions": [{"region_id": 0,
             "bbox": [1, 2, 3, 4]}], "region_captions": [{"region_id": 1, "caption": "a dog"}]},
            {"image_id": "img2", "scene_caption": "a sign [0.1, 0.2, 0.5, 0.6]"}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    got = inputs.read_predictions(jsonl, REFS)
    assert got["img1"].boxes == {0: (1.0, 2.0, 3.0, 4.0)} and got["img1"].region_captions == {1: "a dog"}
    assert got["img2"].scene_caption == "<r0>a sign</r0>" and got["img2"].boxes[0] == pytest.approx((20, 40, 80, 80))
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:1]), parquet)
    assert inputs.read_predictions(parquet, REFS)["img1"].scene_caption == rows[0]["scene_caption"]
    jsonl.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n", encoding="utf-8")
    with pytest.raises(inputs.EvalInputError, match="a second row for image img1"):
        inputs.read_predictions(jsonl, REFS)
    jsonl.write_text(json.dumps({"image_id": "img1", "scene_caption": "<r1>x"}) + "\n", encoding="utf-8")
    with pytest.raises(inputs.EvalInputError, match="unmatched <rN> tags"):
        inputs.read_predictions(jsonl, REFS)
    with pytest.raises(inputs.EvalInputError, match="must be .parquet or .jsonl"):
        (tmp_path / "p.csv").write_text("image_id\n", encoding="utf-8")
        inputs.read_predictions(tmp_path / "p.csv", REFS)


def test_read_reference_names_the_splits_it_has(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"image_id": ["a"]}), tmp_path / "data" / "test-00000-of-00001.parquet")
    with pytest.raises(inputs.EvalInputError, match="no split 'human_test'.*holds: test"):
        inputs.read_reference(str(tmp_path), "human_test")


# --- the metrics' properties (MiniLM) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def judge():
    from groundcap.evaluate.judge_by_name import make

    return make("rules_minilm")


def scores(judge, predictions):
    return report.evaluate(judge, REFS, predictions)


def scene_f1(result):
    return {d: result["scene"][d]["f1"] for d in ("tags", "locations", "attributes", "relations", "global")}


@pytest.mark.slow
@pytest.mark.models
def test_a_perfect_prediction_scores_one_everywhere(judge):
    result = scores(judge, perfect())
    assert scene_f1(result) == dict.fromkeys(scene_f1(result), 1.0)
    assert result["scene"]["overall"] == result["scene"]["overall_max"] == 4.1
    region = result["region"]
    assert (region["positive"], region["negative"], region["dlc"], region["recognized"]) == (1.0, 1.0, 1.0, 1.0)
    assert region["uniqueness"] == region["reference_uniqueness"] == 1.0
    assert result["predicted"] == result["images"] == 2 and result["judge_errors"] == 0


@pytest.mark.slow
@pytest.mark.models
def test_an_empty_prediction_scores_zero(judge):
    empty = {r.image_id: Prediction(r.image_id, "", {}, {g.region_id: "" for g in r.regions}) for r in REFS}
    result = scores(judge, empty)
    assert scene_f1(result) == dict.fromkeys(scene_f1(result), 0.0) and result["scene"]["overall"] == 0.0
    assert (result["region"]["positive"], result["region"]["negative"], result["region"]["uniqueness"]) == (0, 0, 0)
    missing = scores(judge, {"img1": perfect()["img1"]})  # an image left out counts as empty
    assert missing["predicted"] == 1 and 0 < missing["scene"]["tags"]["f1"] < 1


@pytest.mark.slow
@pytest.mark.models
def test_shuffled_boxes_lower_only_locations(judge):
    base = scene_f1(scores(judge, perfect()))
    shuffled = perfect()
    for pred in shuffled.values():
        keys = sorted(pred.boxes)
        pred.boxes = dict(zip(keys, [pred.boxes[k] for k in keys[1:] + keys[:1]], strict=True))
    got = scene_f1(scores(judge, shuffled))
    assert got["locations"] < base["locations"]
    assert {d: v for d, v in got.items() if d != "locations"} == {d: v for d, v in base.items() if d != "locations"}


@pytest.mark.slow
@pytest.mark.models
def test_swapped_colour_words_lower_attributes(judge):
    base = scores(judge, perfect())
    swapped = {k: replace(p, scene_caption=swap_colors(p.scene_caption),
                          region_captions={r: swap_colors(c) for r, c in p.region_captions.items()})
               for k, p in perfect().items()}
    got = scores(judge, swapped)
    assert scene_f1(got)["attributes"] < scene_f1(base)["attributes"]
    assert scene_f1(got)["tags"] == scene_f1(base)["tags"] == 1.0
    assert scene_f1(got)["relations"] == 1.0
    assert got["region"]["positive"] < base["region"]["positive"]
    assert got["region"]["negative"] < base["region"]["negative"]  # the dog is now red: the car's colour


@pytest.mark.slow
@pytest.mark.models
def test_a_caption_that_fits_every_region_lowers_uniqueness(judge):
    generic = perfect()
    for pred in generic.values():
        pred.region_captions = dict.fromkeys(pred.region_captions, "something in the image")
    result = scores(judge, generic)["region"]
    assert result["uniqueness"] < result["reference_uniqueness"] == 1.0
    assert result["uniqueness"] <= 2 / 5  # one shared caption fits at most one region per image best


@pytest.mark.slow
@pytest.mark.models
def test_pancap_inline_form_scores_like_the_grounded_one(judge):
    inline = {r.image_id: Prediction(r.image_id, *inputs.from_inline_boxes(
        grounding.render_boxes(r.scene_caption, {g.region_id: g.bbox for g in r.regions}, r.width, r.height),
        r.width, r.height)) for r in REFS}
    got = scene_f1(scores(judge, inline))
    assert got["tags"] == got["locations"] == got["attributes"] == 1.0


@pytest.mark.slow
@pytest.mark.models
def test_report_table_shows_every_dimension_side_by_side(judge, tmp_path):
    runs = {"a.jsonl": scores(judge, perfect()), "b.jsonl": scores(judge, {})}
    text = report.table({"split": "test", "judge": judge.provenance(), "runs": runs})
    for row in (*report.SCENE_ROWS, *report.REGION_ROWS):
        assert row in text
    assert "| a.jsonl | b.jsonl |" in text and "4.100" in text


# --- the LLM judge through the loopback chat server ------------------------------------------------------


def fake_judge(body: dict, n: int) -> dict:
    """A scripted judge model: every marked entity "is shown" and "near" the next; a statement about a region is
    stated when its words are in the caption, one about entities unless the paragraph is empty; a paragraph
    saying "nothing" gets no JSON; the pick is the candidate equal to the caption."""
    text = user_text(body)
    if text.startswith("You extract"):
        caption = text.split('Caption:\n"', 1)[1].split('"\n\nList', 1)[0]
        entities = sorted({int(k) for k in re.findall(r"\[entity (\d+)\]", caption)})
        return completion(json.dumps({"attributes": [{"entity": k, "fact": "is shown"} for k in entities],
                                      "relations": [{"subject": a, "object": b, "fact": "is near"}
                                                    for a, b in zip(entities, entities[1:], strict=False)],
                                      "global": ["the image is a photo"]}))
    if text.startswith("You check"):
        paragraph = text.split('Paragraph:\n"', 1)[1].split('"\n\nStatements', 1)[0]
        if "nothing" in paragraph:
            return completion("I cannot answer that.")  # never JSON: the judge's error, counted
        statements = re.findall(r"^(\d+)\. (.*)$", text.split("Statements:\n", 1)[1].split("\n\nFor each", 1)[0],
                                re.M)
        answers = [{"id": int(i), "contradicted": False,
                    "stated": paragraph != "(empty)" and (not s.startswith("the region") or re.sub(
                        r"^the region (?:is (?:an? )?|reads )", "", s).lower() in paragraph.lower())}
                   for i, s in statements]
        return completion(json.dumps({"answers": answers}))
    candidates = re.findall(r"^(\d+)\. (.*)$", text, re.M)
    caption = text.split('describe?\n"', 1)[1].split('"\n\nAnswer', 1)[0]
    return completion(json.dumps({"region": next((int(i) for i, c in candidates if c == caption), None)}))


def test_llm_judge_scores_through_the_chat_layer_and_hashes_its_prompts(monkeypatch):
    from groundcap import models
    from groundcap.evaluate.judge_by_name import make

    with FakeOpenAI(fake_judge) as server:
        options = {"base_url": server.url, "api_key_env": "GROUNDCAP_TEST_KEY", "backoff_s": 0.0}
        judge = make("llm", "openai", "fake-judge", options)
        monkeypatch.setattr(judge, "similarity", lambda a, b: __import__("numpy").eye(len(a), len(b)))  # no MiniLM
        result = report.evaluate(judge, REFS, perfect())
        assert scene_f1(result) == dict.fromkeys(scene_f1(result), 1.0)
        assert result["region"]["dlc"] == 1.0 and result["region"]["uniqueness"] == 1.0
        assert result["judge_errors"] == 0
        prov = judge.provenance()
        assert set(prov["prompts"]) == {"eval_extract", "eval_check", "eval_pick"} and len(prov["prompt_hash"]) == 16
        assert "fake-judge (openai)" in prov["judge"]
        sent = [user_text(r.body) for r in server.requests]
        assert any("[entity 1]" in t for t in sent) and any("the region is a dog" in t for t in sent)

        broken = perfect()
        broken["img2"].scene_caption = "<r5>nothing</r5> at all."
        result = report.evaluate(judge, REFS, broken)
        assert result["judge_errors"] > 0 and result["judge_error_examples"]
    models.release()


# --- acceptance: the demo release scored against its own test split, from the command line -----------------


def test_eval_command_on_the_demo_release(sample_project, tmp_path):
    from typer.testing import CliRunner

    from groundcap.cli.app import app

    release = sample_project / "release"
    own = tmp_path / "own.parquet"
    pq.write_table(pq.read_table(next((release / "data").glob("test-*.parquet"))), own)
    generic = tmp_path / "generic.jsonl"
    rows = pq.read_table(own, columns=["image_id", "regions"]).to_pylist()
    generic.write_text("".join(json.dumps({"image_id": r["image_id"], "scene_caption": "A photo.", "region_captions": [
        {"region_id": g["region_id"], "caption": "a region"} for g in r["regions"]]}) + "\n" for r in rows),
        encoding="utf-8")
    out = tmp_path / "reports" / "eval.json"
    result = CliRunner().invoke(app, ["eval", "--release", str(release), "--split", "test", "--predictions", str(own),
                                      "--predictions", str(generic), "--output", str(out)])
    assert result.exit_code == 0, result.output
    for row in (*report.SCENE_ROWS, *report.REGION_ROWS):
        assert f"| scene {row}" in result.output or f"| region {row}" in result.output
    saved = json.loads(out.read_text(encoding="utf-8"))
    mine, theirs = saved["runs"]["own.parquet"], saved["runs"]["generic.jsonl"]
    assert mine["scene"]["overall"] == mine["scene"]["overall_max"] and mine["region"]["dlc"] == 1.0
    assert theirs["scene"]["overall"] < mine["scene"]["overall"] and theirs["region"]["dlc"] < 1.0
    assert saved["judge"]["judge"] == "rules_minilm" and saved["split"] == "test"

    missing = CliRunner().invoke(app, ["eval", "--release", str(release), "--predictions", str(own),
                                       "--output", str(out)])
    assert missing.exit_code == 2 and "split 'human_test'" in missing.output  # the demo has no verdicts


# --- the engine's own accuracy in the card (a project with verdicts) ------------------------------------------


def test_card_reports_the_engines_accuracy_on_human_test(sample_project, tmp_path):
    import csv
    import shutil

    from groundcap import audit, params
    from groundcap.audit import verdicts
    from groundcap.evaluate import accuracy
    from groundcap.pipeline.runner import run_all
    from groundcap.pipeline.stage import Context

    project = tmp_path / "project"
    shutil.copytree(sample_project / "work", project / "work")
    shutil.copytree(sample_project / "reports", project / "reports")
    p = params.load(None)
    p["audit"] |= {"verdicts": str(tmp_path / "verdicts.jsonl"), "max_error_rate": 1.0}
    exported = audit.export(project, p)
    first, second = exported["items"][0], exported["items"][1]
    rid = next(iter(first["regions"]))
    with (tmp_path / "v.csv").open("w", newline="") as fh:  # people recoloured one region, accepted another image
        csv.writer(fh).writerows([verdicts.CSV_HEADER, (f"{first['image_id']}#r{rid}", "edited", "a purple region"),
                                  (second["image_id"], "accept", "")])
    verdicts.import_file(project, p, tmp_path / "v.csv", "csv", exported)
    run_all(Context(root=project, params=p, progress=False), ("split", "build", "card"))

    result = accuracy.accuracy(project / "work", project / "release")
    assert result["images"] == result["predicted"] == 2
    assert result["scene"]["overall"] == result["scene"]["overall_max"]  # nobody corrected a scene caption
    assert result["region"]["positive"] < 1.0  # the machine said another colour where people say purple
    card = (project / "release" / "README.md").read_text(encoding="utf-8")
    assert "Engine accuracy on human_test" in card and "2 images people checked" in card
    for row in ("scene tags F1", "scene attributes F1", "scene overall", "region positive", "region uniqueness"):
        assert f"| {row}" in card
    assert "Engine accuracy" not in (sample_project / "release" / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.models
def test_the_llm_judge_agreement_with_the_rules_is_reported(monkeypatch):
    from groundcap import models
    from groundcap.evaluate.judge_by_name import make
    from groundcap.evaluate.judges import RulesMiniLMJudge

    with FakeOpenAI(fake_judge) as server:
        judge = make("llm", "openai", "fake-judge", {"base_url": server.url, "api_key_env": "GROUNDCAP_TEST_KEY"})
        rules = RulesMiniLMJudge()
        monkeypatch.setattr(judge, "similarity", lambda a, b: __import__("numpy").eye(len(a), len(b)))
        swapped = {k: replace(p, region_captions={r: swap_colors(c) for r, c in p.region_captions.items()})
                   for k, p in perfect().items()}
        result = report.evaluate(judge, REFS, swapped, rules)["judge_agreement"]
    models.release()
    assert result["judges"] == ["rules_minilm", "llm"] and result["questions"] > 20 and result["unanswered"] == 0
    # the script states a region's words when they appear; the rules also see the swapped colour contradict
    assert 0.0 < result["agreement"] < 1.0
    assert {"attribute:label", "attribute:color", "relation:relation", "global:sentence"} <= set(result["by_kind"])
