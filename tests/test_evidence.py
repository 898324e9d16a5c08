"""Evidence checks: the claims captions make, judged against real photos' pixels and the annotations.
True captions (the embedded captioners') are never contradicted; planted lies of each kind are."""

from __future__ import annotations

import pytest
from skimage import data

from groundcap import colors, grounding
from groundcap.annotators import registry
from groundcap.annotators.base import RegionCaption
from groundcap.annotators.entities import resolve_entities
from groundcap.qa import claims, evidence
from test_annotators import rect_mask, region


def kinds(verdicts, verdict):
    return [v["kind"] for v in verdicts if v["verdict"] == verdict]


# --- parsing -------------------------------------------------------------------------------------


def test_parse_reads_every_kind_in_order():
    text = ('Two small gray cats at the top left of the image, covering 12% of it. Mostly red (63%). '
            'A sign reads "Red Sale" next to 3 wine glasses.')
    assert [(c.kind, c.value) for c in claims.parse(text)] == [
        ("count", (2, "cat")), ("color", ("gray", None, None)), ("label", "cat"), ("position", ("top", "left")),
        ("area", 0.12), ("color", ("red", 0.63, None)), ("label", "sign"), ("text", "Red Sale"),
        ("count", (3, "wine glass")), ("label", "wine glass")]
    assert claims.parse(text) == claims.parse(text)


def test_parse_leaves_out_what_is_not_clearly_a_claim():
    text = ('A label reading "blue 5 dogs" sits to the left of the cup, at the top of the table; '
            'one of the two-thirds is not green and none covering 15%: white (40%).')
    assert [(c.kind, c.value) for c in claims.parse(text)] == [
        ("text", "blue 5 dogs"), ("label", "cup"), ("label", "table"), ("color", ("white", 0.4, None))]


@pytest.mark.parametrize("phrase, where", [
    ("on the left side", (None, "left")), ("in the upper-right corner", ("top", "right")),
    ("at the bottom", ("bottom", None)), ("in the middle of the picture", ("middle", "center")),
    ("in the centre", ("middle", "center"))])
def test_parse_positions(phrase, where):
    assert [c.value for c in claims.parse(f"A dog {phrase}.") if c.kind == "position"] == [where]


def test_singular_handles_vocabulary_plurals_and_labels():
    assert [claims.singular(w) for w in ("People", "knives", "traffic lights", "glasses", "buses", "grass",
                                         "mice", "strawberries")] == \
        ["person", "knife", "traffic light", "glasses", "bus", "grass", "mouse", "strawberry"]


# --- agreement between two captions of one region -------------------------------------------------


def test_agreement_compares_kinds_both_captions_make():
    a = claims.parse('Two red cups at the top left, reading "OPEN".')
    assert claims.agreement(a, a) == (1.0, [])
    same = claims.parse('Two cups with red and white stripes at the top, reading "open!"')
    assert claims.agreement(a, same) == (1.0, [])
    b = claims.parse('Three blue mugs at the bottom left, reading "CLOSED".')
    score, notes = claims.agreement(a, b)
    assert score == 0.0  # label, color, position, text; the counts are of different nouns
    assert notes == ["label: 'cup' vs 'mug'", "color: 'red' vs 'blue'",
                     "position: 'at the top left' vs 'at the bottom left'", "text: 'OPEN' vs 'CLOSED'"]
    score, notes = claims.agreement(a, claims.parse("Three red cups on the left."))
    assert score == 0.75 and notes == ["count: 'Two red cups' vs 'Three red cups'"]
    assert claims.agreement(claims.parse("A thing."), a) == (None, [])


# --- pixels and annotations ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chelsea():
    """The cat photo with two regions labelled cat (left and right halves), a sign with OCR text."""
    image = data.chelsea()
    h, w = image.shape[:2]
    regions = [region(0, rect_mask(h, w, 0, h, 0, w // 3), "cat"),
               region(1, rect_mask(h, w, h // 3, h, 2 * w // 3, w), "cats"),
               region(2, rect_mask(h, w, 0, h // 4, w // 3, 2 * w // 3), "sign", text="OPEN 24 HOURS")]
    return image, regions


def test_embedded_captions_are_never_contradicted():
    for image in (data.coffee(), data.astronaut(), data.chelsea()):
        h, w = image.shape[:2]
        masks_ = registry.create("mask_generator", "felzenszwalb").generate(image)
        regions = resolve_entities([], masks_, h, w, min_area_frac=0.005, nms_iou=0.7, max_regions=8)
        captions = registry.create("region_captioner", "attributes").caption(image, regions)
        for c, r in zip(captions, regions, strict=True):
            verdicts = evidence.check_region(f"{c.short}. {c.detailed}", image, r, regions)
            assert kinds(verdicts, "contradicted") == [], verdicts
            assert {"color", "position", "area"} <= set(kinds(verdicts, "supported"))
        scene = registry.create("scene_captioner", "geometry").compose(image, regions, captions).text
        verdicts = evidence.check_scene(scene, image, regions)
        assert kinds(verdicts, "contradicted") == [] and "count" in kinds(verdicts, "supported")


def test_planted_lies_are_caught_and_truths_pass(chelsea):
    image, regions = chelsea
    left, sign = regions[0], regions[2]
    truth = evidence.check_region('Two cats on the left; a sign reads "open 24 hours".', image, left, regions)
    assert kinds(truth, "supported") == ["count", "position"]
    assert kinds(truth, "unverifiable") == ["text"]  # the cat region has no OCR text
    assert kinds(evidence.check_region('It reads "OPEN 24".', image, sign, regions), "supported") == ["text"]

    shares = dict(colors.color_shares(image[:, : image.shape[1] // 3].reshape(-1, 3)))
    absent = next(c for c in ("blue", "green", "purple", "cyan", "pink") if shares.get(c, 0) < 0.01)
    lies = {"color": f"A {absent} cat.", "position": "A cat on the right.", "count": "Three cats.",
            "area": "A cat covering 80% of the image."}
    for kind, text in lies.items():
        verdicts = evidence.check_region(text, image, left, regions)
        assert kinds(verdicts, "contradicted") == [kind], verdicts
    verdicts = evidence.check_region('A sign reading "CLOSED".', image, sign, regions)
    assert kinds(verdicts, "contradicted") == ["text"]
    assert evidence.contradicted(verdicts) == ["evidence: says '\"CLOSED\"' but its OCR text is 'OPEN 24 HOURS' "
                                               "(similarity 0.24)"]


def test_what_the_evidence_cannot_settle_is_unverifiable(chelsea):
    image, regions = chelsea
    verdicts = evidence.check_region('A brown cat on the left, two dogs, reading "hi".', None, regions[0], regions)
    assert [(v["kind"], v["verdict"]) for v in verdicts] == [
        ("color", "unverifiable"), ("position", "supported"), ("count", "unverifiable"), ("text", "unverifiable")]
    assert evidence.contradicted(verdicts) == []


def test_position_is_settled_by_the_centroid_cell_or_most_of_the_box():
    h, w = 90, 90
    mask = rect_mask(h, w, 0, 90, 36, 54)  # a heavy bar in the middle column...
    mask[:9, :27] = True  # ...and a thin arm: the box spans 0-54, mostly in the left third
    shape = [region(0, mask)]
    verdicts = evidence.check_region("A thing in the center, on the left, on the right.", None, shape[0], shape)
    assert [v["verdict"] for v in verdicts] == ["supported", "supported", "contradicted"]
    assert "most of its box is in the named third" in verdicts[1]["detail"]
    assert verdicts[2]["detail"] == ("its centre is in the center of the image and most of its box is outside "
                                     "the right third")


def test_check_scene_judges_each_grounded_phrase_against_its_region(chelsea):
    image, regions = chelsea
    sign = grounding.ref(2, 'a sign reading "OPEN 24 HOURS"')
    text = (f"An image with 3 regions: two cats, {grounding.ref(0, 'a brown cat')} on the left and {sign} at the top. "
            f"{grounding.ref(9, 'a green dog')} sits to the right of {grounding.ref(0, 'the brown cat')}.")
    verdicts = evidence.check_scene(text, image, regions)
    assert [(v["claim"], v["verdict"]) for v in verdicts] == [
        ("r0: brown", "supported"), ("r0: on the left", "supported"), ('r2: "OPEN 24 HOURS"', "supported"),
        ("r2: at the top", "supported"), ("3 regions", "supported"), ("two cats", "supported")]
    lie = text.replace("brown cat</r0> on the left", "green cat</r0> on the right").replace("3 regions", "4 regions")
    assert evidence.contradicted(evidence.check_scene(lie, image, regions)) == [
        "evidence: says 'r0: green' but green covers less than 1% of the region",
        "evidence: says 'r0: on the right' but its centre is in the left of the image and most of its box is "
        "outside the right third",
        "evidence: says '4 regions' but the image has 3 regions"]


def test_options_from_params_ignore_the_action():
    assert evidence.Options.from_params({"action": "flag", "min_color_share": 0.1}) == evidence.Options(0.1)


def test_pixel_claims_verifier_also_judges_counts_and_quotes(chelsea):
    image, regions = chelsea
    verifier = registry.create("verifier", "pixel_claims", {"min_text_similarity": 0.95})
    got = verifier.verify(image, regions, [RegionCaption(2, 'a sign reading "OPEN 42 HOURS"', "Three cats.")])
    assert not got[0].accepted
    assert got[0].reason == ("says '\"OPEN 42 HOURS\"' but its OCR text is 'OPEN 24 HOURS' (similarity 0.91); "
                             "says 'Three cats' but 2 regions are labelled cat")
