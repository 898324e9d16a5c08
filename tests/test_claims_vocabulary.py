"""The claims VLMs write beyond colours: materials, counts in words, relations between references;
how QA reads them, judges them against the masks, compares them across models and counts them."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from groundcap.dataset_card import card
from groundcap.qa import claims, evidence
from groundcap.qa.report import Summary
from test_annotators import rect_mask, region

H, W = 60, 90


def values(text: str, kind: str) -> list:
    return [c.value for c in claims.parse(text) if c.kind == kind]


def verdicts(found: list[dict], kind: str) -> list[tuple[str, str]]:
    return [(v["claim"], v["verdict"]) for v in found if v["kind"] == kind]


@pytest.fixture(scope="module")
def scene():
    """A dog (left), a sofa (right), a cup on a table (top middle): disjoint rectangles, labelled."""
    image = np.full((H, W, 3), 120, np.uint8)
    regions = [region(1, rect_mask(H, W, 30, 60, 0, 30), "dog"), region(2, rect_mask(H, W, 30, 60, 60, 90), "sofa"),
               region(3, rect_mask(H, W, 0, 15, 35, 55), "cup"), region(4, rect_mask(H, W, 15, 30, 30, 60), "table"),
               region(5, rect_mask(H, W, 50, 60, 30, 45), "dog")]
    return image, regions


# --- materials -----------------------------------------------------------------------------------


def test_materials_are_read_as_the_material_they_name():
    text = "A wooden bench with a metallic frame next to a glass door and a stainless steel sink; a leather bag."
    assert values(text, "material") == ["wood", "metal", "glass", "metal", "leather"]
    assert [c.text for c in claims.parse(text) if c.kind == "material"] == ["wooden", "metallic", "glass", "steel",
                                                                             "leather"]
    # negated, colour words (a shade or "X-colored"), and words that merely contain one are no material
    assert values("a non-metallic case, not plastic", "material") == []
    assert values("a steel blue car and a copper-colored pot", "material") == []
    assert values("two wine glasses, sunglasses and the woods", "material") == []


def test_a_material_is_unverifiable_from_pixels_and_two_materials_disagree(scene):
    image, regions = scene
    found = evidence.check_region("A wooden dog made of stone.", image, regions[0], regions)
    assert verdicts(found, "material") == [("wooden", "unverifiable"), ("stone", "unverifiable")]
    assert all("cannot tell" in v["detail"] for v in found if v["kind"] == "material")
    share, disagreements = claims.agreement(claims.parse("a wooden chair"), claims.parse("a metal chair"))
    assert share == 0.5 and disagreements == ["material: 'wood' vs 'metal'"]
    assert claims.agreement(claims.parse("a wooden chair"), claims.parse("a timber chair with a steel frame")) == \
        (1.0, [])  # the same material in other words, and one more: no disagreement


# --- counts in words -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, count", [
    ("two dogs", (2, "dog")), ("three people", (3, "person")), ("seventeen birds", (17, "bird")),
    ("twenty cars", (20, "car")), ("a pair of shoes", (2, "shoe")), ("a dozen eggs", (12, "egg")),
    ("2 dozen donuts", (24, "donut")), ("several brown dogs", (None, "dog")), ("many people", (None, "person")),
    ("a few cars", (None, "car")), ("a couple of cats", (None, "cat")), ("a group of people", (None, "person"))])
def test_counts_are_read_from_number_words_and_vague_quantities_name_no_number(text, count):
    assert values(f"In the photo, {text} are visible.", "count") == [count]


def test_what_is_not_a_count_in_words():
    assert values("a pair of scissors and a pair of glasses", "count") == []  # one thing each (plural labels)
    assert values("a pair of dresses", "count") == [(2, "dress")]
    assert values("one dog and many of the cats", "count") == []  # "one" rarely counts; "many of" is no quantity


def test_count_words_are_judged_against_the_labelled_regions(scene):
    image, regions = scene
    found = evidence.check_scene("Two dogs, a pair of dogs, three dogs, several dogs, a dozen dogs and four cats.",
                                 image, regions)
    assert verdicts(found, "count") == [("Two dogs", "supported"), ("a pair of dogs", "supported"),
                                        ("three dogs", "contradicted"), ("several dogs", "unverifiable"),
                                        ("a dozen dogs", "contradicted"), ("four cats", "unverifiable")]
    # across models a vague quantity compares with nothing; two numbers that differ disagree
    assert claims.agreement(claims.parse("several dogs"), claims.parse("two dogs")) == (1.0, [])
    assert claims.agreement(claims.parse("three dogs"), claims.parse("two dogs"))[1] == \
        ["count: 'three dogs' vs 'two dogs'"]


# --- relations between references ---------------------------------------------------------------

CAPTION = ("<r1>A brown dog</r1> is to the left of <r2>a gray sofa</r2>. <r3>A white cup</r3> sits on top of "
           "<r4>a wooden table</r4>, <r4>the table</r4> is above <r1>the dog</r1>; <r2>the sofa</r2> is left of "
           "<r1>the dog</r1>. <r1>The dog</r1> is behind <r5>a puppy</r5>, and <r5>the puppy</r5> is holding "
           "<r9>a ball</r9>. The dog is under <r4>the table</r4>.")


def test_relations_are_read_between_two_references_only():
    assert values(CAPTION, "relation") == [(1, "left of", 2), (3, "above", 4), (4, "above", 1), (2, "left of", 1),
                                           (1, "behind", 5), (5, "holding", 9)]
    assert [c.text for c in claims.relations(CAPTION)][:2] == ["A brown dog is to the left of a gray sofa",
                                                               "A white cup sits on top of a wooden table"]
    # more than a relation phrase between the references, or a reference to the same region: no relation
    assert claims.relations("<r1>a dog</r1> that is far from the left of <r2>a sofa</r2>") == []
    assert claims.relations("<r1>a dog</r1> next to <r1>the dog</r1>") == []
    assert values(claims.caption_text("a dog to the left of a sofa", "on the left"), "relation") == []


def test_relations_pixels_can_check_are_supported_or_contradicted_the_others_unverifiable(scene):
    image, regions = scene
    found = evidence.check_scene(CAPTION, image, regions)
    assert verdicts(found, "relation") == [
        ("r1, r2: A brown dog is to the left of a gray sofa", "supported"),
        ("r3, r4: A white cup sits on top of a wooden table", "supported"),
        ("r4, r1: the table is above the dog", "supported"),
        ("r2, r1: the sofa is left of the dog", "contradicted"),
        ("r1, r5: The dog is behind a puppy", "unverifiable")]  # r9 does not exist: QA reports it elsewhere
    assert [v["detail"] for v in found if v["kind"] == "relation" and v["verdict"] == "contradicted"] == [
        "r2's centre is at 75 and r1's at 15 along x and r2's box does not reach further left"]


def test_a_region_whose_box_reaches_further_that_way_is_not_contradicted():
    rail = region(1, rect_mask(H, W, 45, 50, 5, 85), "region")  # centre x 45, box from x 5
    post = region(2, rect_mask(H, W, 30, 45, 30, 40), "region")  # centre x 35
    found = evidence.check_scene("<r1>a rail</r1> to the left of <r2>a post</r2>", None, [rail, post])
    assert [(v["verdict"], v["detail"].endswith("reaches further left")) for v in found] == [("supported", True)]
    found = evidence.check_scene("<r2>a post</r2> to the right of <r1>a rail</r1>", None, [rail, post])
    assert [v["verdict"] for v in found] == ["contradicted"]


def test_relations_that_cannot_both_hold_disagree_across_models():
    first = claims.parse("<r3>a cup</r3> on top of <r4>a table</r4>")
    assert claims.agreement(first, claims.parse("<r4>a table</r4> is below <r3>a cup</r3>")) == (1.0, [])
    share, disagreements = claims.agreement(first, claims.parse("<r4>the table</r4> is above <r3>the cup</r3>"))
    assert share == 0.5 and disagreements == ["relation: 'a cup on top of a table' vs 'the table is above the cup'"]


# --- per-kind counts in the QA report and the card --------------------------------------------------


def test_the_report_counts_claims_parsed_and_each_verdict_per_kind_and_the_card_shows_them(scene):
    image, regions = scene
    scene_verdicts = evidence.check_scene(CAPTION + " Several dogs and two dogs.", image, regions)
    region_verdicts = evidence.check_region("A wooden dog on the left.", image, regions[0], regions)
    row = {"passed": True, "reasons": [], "scene_evidence": scene_verdicts,
           "regions": [{"passed": True, "score": 1.0, "reasons": [], "evidence": region_verdicts,
                        "consistency": None}]}
    summary = Summary()
    summary.add([row])
    report = summary.to_dict()["evidence"]
    assert report["relation"] == {"parsed": 5, "supported": 3, "contradicted": 1, "unverifiable": 1}
    assert report["count"] == {"parsed": 2, "supported": 1, "contradicted": 0, "unverifiable": 1}
    assert report["material"] == {"parsed": 2, "supported": 0, "contradicted": 0, "unverifiable": 2}
    assert report["position"] == {"parsed": 1, "supported": 1, "contradicted": 0, "unverifiable": 0}
    section = card._qa_section(summary.to_dict(), {"qa": {}, "crosscheck": {}})
    assert "| claim kind | parsed | supported | contradicted | unverifiable |" in section
    assert "| relation | 5 | 3 | 1 | 1 |" in section and "| material | 2 | 0 | 0 | 2 |" in section


def test_a_material_word_inside_a_label_or_a_shade_names_no_material():
    assert values("a wine glass on a brick red table by a brick wall", "material") == ["brick"]


def test_a_caption_is_read_once_however_many_checks_parse_it():
    """The uniqueness rounds, the verifier and QA parse the same captions again and again; each caller still gets
    its own list."""
    text = "A wooden crate at the bottom left, covering 7% of the image; its main color is teal (41%)."
    with mock.patch.object(claims, "_colors", wraps=claims._colors) as read:
        first = claims.parse(text)
        first.append(None)
        assert claims.parse(text) == first[:-1] and read.call_count == 1
