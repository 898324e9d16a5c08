"""Shade words (xkcd and CSS colour names in CIE Lab): read by qa.claims, held to their own colour by qa.evidence."""

from __future__ import annotations

import numpy as np

from groundcap import colors
from groundcap.qa import claims, evidence
from test_annotators import rect_mask, region


def colours(text: str) -> list[tuple]:
    return [c.value for c in claims.parse(text) if c.kind == "color"]


def test_shades_are_read_with_their_basic_name_and_unknown_colour_words_are_not_guessed():
    assert colours("a navy blue car") == [("blue", None, "navy blue")]
    assert colours("a reddish-brown dog and a crimson (40%) door") == [("brown", None, "reddish brown"),
                                                                       ("red", 0.4, "crimson")]
    assert colours("a dark grey wall") == [("gray", None, "dark grey")]  # a compound keeps its colour word
    assert colours("a blue car") == [("blue", None, None)]  # the basic names as before
    assert colours("a wine-colored sofa") == [(None, None, None)]
    assert colours("not navy") == []
    # words that name things more often than colours are not colour claims
    assert colours("a golden retriever under an olive tree on a slate roof") == []
    assert colours("a medium brown region") == [("brown", None, None)]  # "medium" is its size here
    assert len(colors.shades()) > 500 and colors.shades()["teal"][2] == "cyan"


def test_a_wrong_shade_of_the_right_hue_is_contradicted():
    image = np.zeros((60, 60, 3), np.uint8)
    image[:, :30] = (10, 20, 75)  # navy
    image[:, 30:] = (150, 205, 250)  # light blue
    navy = region(1, rect_mask(60, 60, 0, 60, 0, 30))
    light = region(2, rect_mask(60, 60, 0, 60, 30, 60))
    regions = [navy, light]

    def verdict(text, r):
        return [v["verdict"] for v in evidence.check_region(text, image, r, regions) if v["kind"] == "color"]

    assert verdict("a navy region", navy) == ["supported"]
    assert verdict("a navy region", light) == ["contradicted"]  # passed QA before: "navy" was no colour word
    assert verdict("a light blue region", light) == ["supported"]
    assert verdict("a light blue region", navy) == ["contradicted"]
    assert verdict("a wine-colored region", navy) == ["unverifiable"]


def test_unplaced_colour_words_are_not_compared_across_models():
    share, disagreements = claims.agreement(claims.parse("a wine-colored sofa"), claims.parse("a red sofa"))
    assert share == 1.0 and disagreements == []  # only the labels compare
    share, disagreements = claims.agreement(claims.parse("a navy blue sofa"), claims.parse("a red sofa"))
    assert share == 0.5 and disagreements == ["color: 'blue' vs 'red'"]


def test_colour_words_as_vlms_write_them_are_read():
    assert colours("an emerald green dress beside a ruby vase") == [("green", None, "emerald green"),
                                                                  ("red", None, "ruby")]
    assert colours("a silver car and a golden crown") == [("gray", None, "silver"), ("yellow", None, "golden")]
    assert colours("an off-white wall, a charcoal gray sofa") == [("white", None, "off white"),
                                                                   ("gray", None, "charcoal gray")]
    assert colours("a gold-colored vase")[0][2] == "gold"  # was unplaced: no list had "gold"
    assert colours("a bluish-green lake")[0][2] == "bluish green"
    # the words that name things stay things
    assert colours("an olive oil bottle, an ice cream cone and a gold medal") == []
    share, disagreements = claims.agreement(claims.parse("a silver car"), claims.parse("a gray car"))
    assert disagreements == []  # silver is called gray, though light enough to be named white


def test_vlm_colour_words_are_held_to_their_colour():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = (13, 152, 186)  # a blue-green between the two hues, far from the survey's dark "blue green"
    image[:, 40:] = (65, 105, 225)  # CSS's royal blue (the survey's is #0504aa)
    left = region(1, rect_mask(40, 80, 0, 40, 0, 40))
    right = region(2, rect_mask(40, 80, 0, 40, 40, 80))

    def verdict(text, r):
        return [v["verdict"] for v in evidence.check_region(text, image, r, [left, right]) if v["kind"] == "color"]

    assert verdict("a blue-green region", left) == ["supported"]  # contradicted before: a true caption failed
    assert verdict("a royal blue region", right) == ["supported"]
    assert verdict("an emerald region", right) == ["contradicted"]  # no colour claim before: the lie passed
    assert verdict("a silver region", left) == ["contradicted"]
