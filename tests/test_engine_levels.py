"""The seeds' three levels, model-agnostic: detection merge, entity/part resolution, unique and
verified region captions, divided scene captions, profiles and the backend listing."""

from __future__ import annotations

import json
import re
from unittest import mock

import numpy as np
import pytest
from skimage import data

from groundcap import colors, grounding, masks, params
from groundcap.annotators import divide, registry, uniqueness
from groundcap.annotators.base import Detection, Mask, RegionCaption, Tag, Tagger, crop
from groundcap.annotators.detections import merge
from groundcap.annotators.entities import resolve_entities
from groundcap.qa import claims, consistency
from test_annotators import rect_mask, region


def det(label, box, score, source):
    return Detection(label, score, tuple(float(v) for v in box), source)


def test_detections_merge_across_detectors_by_iou_and_label_never_by_score():
    gdino = [det("dog", (10, 10, 100, 100), 0.35, "grounding_dino"),
             det("cat", (200, 10, 50, 50), 0.9, "grounding_dino")]
    owl = [det("Dog", (12, 11, 98, 100), 0.95, "owlv2"),  # same dog: merged, gdino's box and score kept
           det("cat", (10, 10, 100, 100), 0.8, "owlv2"),  # same box, other label: kept apart
           det("dog", (400, 10, 50, 50), 0.1, "owlv2")]   # only owlv2 found it: kept, however low its score
    out = merge([gdino, owl], iou=0.6)
    assert [(d.label, d.source, d.score) for d in out] == [
        ("cat", "grounding_dino", 0.9), ("dog", "grounding_dino+owlv2", 0.35),
        ("cat", "owlv2", 0.8), ("dog", "owlv2", 0.1)]
    assert out[1].bbox == (10.0, 10.0, 100.0, 100.0)


def test_one_detectors_own_overlapping_boxes_are_not_merged_into_each_other():
    boxes = [det("person", (0, 0, 50, 100), 0.9, "owlv2"), det("person", (2, 0, 50, 100), 0.8, "owlv2")]
    assert len(merge([boxes], iou=0.5)) == 2


def cand(mask, granularity="object", score=1.0, piou=None, stab=None, source="gen"):
    return Mask(masks.encode(mask), "", score, source, granularity, None, piou, stab)


def test_low_quality_masks_are_removed_before_resolution():
    h, w = 60, 80
    good = cand(rect_mask(h, w, 0, 30, 0, 40), piou=0.95, stab=0.97)
    shaky = cand(rect_mask(h, w, 30, 60, 40, 80), piou=0.95, stab=0.5)
    unsure = cand(rect_mask(h, w, 0, 30, 40, 80), piou=0.4, stab=0.99)
    plain = cand(rect_mask(h, w, 30, 60, 0, 40))  # no estimates (e.g. Felzenszwalb): passes
    out = resolve_entities([], [good, shaky, unsure, plain], h, w, min_area_frac=0.01, nms_iou=0.7, max_regions=10,
                           min_predicted_iou=0.8, min_stability=0.9)
    assert [r["bbox"] for r in out] == [[0.0, 0.0, 40.0, 30.0], [0.0, 30.0, 40.0, 30.0]]


def test_parts_link_to_the_entity_holding_them_and_never_overlap_each_other():
    h, w = 100, 100
    person = rect_mask(h, w, 10, 90, 10, 50)
    car = rect_mask(h, w, 40, 90, 55, 95)
    head = rect_mask(h, w, 10, 30, 20, 40)
    face = rect_mask(h, w, 15, 30, 22, 38)        # inside the head: resolved against it
    arm = rect_mask(h, w, 30, 70, 10, 22) | rect_mask(h, w, 30, 32, 10, 52)  # spills 2 columns out of the person
    wheel = rect_mask(h, w, 80, 90, 60, 70)
    straddler = rect_mask(h, w, 40, 60, 40, 70)  # half in each entity: no parent, dropped
    gen = [cand(person), cand(car), cand(head, "part"), cand(face, "part"), cand(arm, "part"), cand(wheel, "part"),
           cand(straddler, "part")]
    out = resolve_entities([], gen, h, w, min_area_frac=0.005, nms_iou=0.9, max_regions=10, max_parts=10)
    entities = [r for r in out if r["granularity"] != "part"]
    parts = [r for r in out if r["granularity"] == "part"]
    assert [r["region_id"] for r in out] == list(range(len(out)))
    assert len(entities) == 2 and {r["parent_id"] for r in entities} == {None}
    by_parent = {}
    for p in parts:
        parent = masks.decode(out[p["parent_id"]]["segmentation"])
        m = masks.decode(p["segmentation"])
        assert not (m & ~parent).any(), "a part is clipped to its parent"
        by_parent.setdefault(p["parent_id"], []).append(m)
    # wheel on the car; head and arm on the person (the face lies inside the head: nothing of it is left)
    assert sorted(len(v) for v in by_parent.values()) == [1, 2]
    for group in by_parent.values():
        assert sum(m.astype(int) for m in group).max() == 1, "parts of one parent never overlap"
    assert not any(np.array_equal(masks.decode(p["segmentation"]), straddler) for p in parts)
    none = resolve_entities([], gen, h, w, min_area_frac=0.005, nms_iou=0.9, max_regions=10, max_parts=0)
    assert [r["granularity"] for r in none] == ["object", "object"]


@pytest.fixture(scope="module")
def minilm():
    return consistency.embedder("minilm")


# (short, detailed) of two regions of one image: a reader could take one for the other, or could not
CLASH = [
    (("a small dog", "A small brown dog sitting on the grass."),
     ("a little puppy", "A little brown puppy sitting on the lawn.")),
    (("a white cup", "A white ceramic cup."), ("a white mug", "A white ceramic mug.")),  # labels differ, meaning not
    (("a gray region", "A gray region of the image."), ("the gray region", "A gray area of the picture.")),
    (("a car", "A parked car."), ("an automobile", "A parked automobile.")),
]
DISTINCT = [
    (("a person", "A woman holding an umbrella in the rain."), ("a person", "A child riding a bicycle on the path.")),
    (("a window", "A small round window high up in the tower."), ("a window", "A large shop window at street level.")),
    (("a white cup on the left", "A white cup at the left of the table."),  # cosine 0.99: the sides tell them apart
     ("a white cup on the right", "A white cup at the right of the table.")),
    (("a sign", 'A sign reading "STOP".'), ("a sign", 'A sign reading "EXIT".')),
    (("a gray region", "A small gray region at the bottom of the image, covering 5% of it."),  # two grid cells
     ("a gray region", "A small gray region at the bottom right of the image, covering 4% of it.")),
]


@pytest.mark.parametrize("pair,clash", [(p, True) for p in CLASH] + [(p, False) for p in DISTINCT])
def test_uniqueness_judges_short_and_detailed_captions_by_meaning_and_claims(minilm, pair, clash):
    """Word overlap of the short captions got every one of these wrong but the gray regions."""
    (short_a, detailed_a), (short_b, detailed_b) = pair
    captions = [RegionCaption(3, short_a, detailed_a), RegionCaption(5, short_b, detailed_b),
                RegionCaption(8, "a red bicycle", "A red bicycle leaning on a fence."), RegionCaption(9, "", "")]
    expected = {3: [5], 5: [3]} if clash else {}
    assert uniqueness.clashes(captions, 0.78, minilm) == expected


def test_uniqueness_embeds_only_the_captions_their_claims_cannot_tell_apart(minilm):
    """The embeddings are what costs (0.1-0.5 s of CPU for six captions): captions whose sides already tell them
    apart are never encoded, and the pair left is judged as before."""
    (cup_left, cup_right), (dog, puppy) = DISTINCT[2], CLASH[0]
    captions = [RegionCaption(k, *pair) for k, pair in enumerate((cup_left, dog, cup_right, puppy))]
    with mock.patch.object(minilm, "encode", wraps=minilm.encode) as encode:
        assert uniqueness.clashes(captions, 0.78, minilm) == {1: [3], 3: [1]}
    assert [c.args[0] for c in encode.call_args_list] == [[claims.caption_text(*dog), claims.caption_text(*puppy)]]


def test_attribute_captions_are_unique_when_what_they_measure_tells_the_regions_apart(minilm):
    """Two blue squares: "a blue region" each, but the detailed captions say where (and how much of the image)
    each is, so a reader tells them apart without refining; two alike in the same corner are recorded."""
    h, w = 90, 90
    image = np.full((h, w, 3), 200, np.uint8)
    image[:30, :30] = image[60:, 60:] = (20, 40, 200)  # top left, bottom right
    image[60:63, 0:3] = image[72:75, 20:23] = (20, 40, 200)  # two small ones, bottom left
    regions = [region(0, rect_mask(h, w, 0, 30, 0, 30)), region(1, rect_mask(h, w, 60, 90, 60, 90)),
               region(2, rect_mask(h, w, 60, 63, 0, 3)), region(3, rect_mask(h, w, 72, 75, 20, 23))]
    captioner = registry.create("region_captioner", "attributes")
    first = captioner.caption(image, regions)
    assert {c.short for c in first} == {"a blue region"}
    refined, left = uniqueness.make_unique(captioner, image, regions, first, rounds=4, max_similarity=0.78,
                                            embedder=minilm)
    assert left == {2: [3], 3: [2]}
    assert [c.short for c in refined[:2]] == ["a blue region", "a blue region"]
    assert refined[2].short == refined[3].short and refined[2].facts["qualifiers"] == 4  # every qualifier tried


def test_a_captioner_that_cannot_refine_has_its_clashes_recorded(minilm):
    class Plain(registry.base.RegionCaptioner):
        def caption(self, image, regions):
            return [RegionCaption(r["region_id"], "a thing", "a thing") for r in regions]

    regions = [region(0, rect_mask(10, 10, 0, 5, 0, 5)), region(1, rect_mask(10, 10, 5, 10, 5, 10))]
    plain = Plain()
    captions, left = uniqueness.make_unique(plain, None, regions, plain.caption(None, regions), rounds=2,
                                            max_similarity=0.78, embedder=minilm)
    assert left == {0: [1], 1: [0]}


@pytest.fixture(scope="module")
def coffee_regions():
    image = data.coffee()
    h, w = image.shape[:2]
    gen = registry.create("mask_generator", "felzenszwalb")
    regions = resolve_entities([], gen.generate(image), h, w, min_area_frac=0.005, nms_iou=0.7, max_regions=16)
    return image, regions


def test_pixel_claims_accepts_measured_captions_and_rejects_false_ones(coffee_regions):
    image, regions = coffee_regions
    captions = registry.create("region_captioner", "attributes").caption(image, regions)
    verifier = registry.create("verifier", "pixel_claims")
    verdicts = verifier.verify(image, regions, captions)
    assert all(v.accepted for v in verdicts), [v.reason for v in verdicts if not v.accepted]
    assert all(v.reason.startswith("checked") for v in verdicts)

    big = max(regions, key=lambda r: r["area"])
    shares = dict(colors.color_shares(image[masks.decode(big["segmentation"])]))
    absent = next(c for c in ("purple", "cyan", "green", "pink") if shares.get(c, 0) < 0.01)
    cx = big["bbox"][0] + big["bbox"][2] / 2
    wrong_side = "on the right" if cx < image.shape[1] / 3 else "on the left"
    lies = [
        RegionCaption(big["region_id"], f"a {absent} cup", f"A {absent} cup."),
        RegionCaption(big["region_id"], "a cup", f"A cup {wrong_side} of the image."),
        RegionCaption(big["region_id"], "a cup", "A cup, covering 97% of it."),
        RegionCaption(big["region_id"], "a cup", 'A cup with a label reading "purple cyan".'),  # quoted: not a claim
    ]
    got = verifier.verify(image, regions, lies)
    assert [v.accepted for v in got] == [False, False, False, True]
    assert absent in got[0].reason and "covers" in got[0].reason
    assert wrong_side in got[1].reason
    assert "97%" in got[2].reason
    assert got[3].reason == "no measurable claims"


def test_divide_splits_the_longer_side_until_parts_fit(coffee_regions):
    image, regions = coffee_regions
    h, w = image.shape[:2]
    assert [p.name for p in divide.split(regions, w, h, limit=len(regions))] == ["whole image"]
    parts = divide.split(regions, w, h, limit=2)
    assert all(len(p.regions) <= 2 for p in parts), "divided beyond quarters until every part fits"
    assert any(p.name.startswith("eighth at x ") for p in parts) and len({p.name for p in parts}) == len(parts)
    ids = sorted(r["region_id"] for p in parts for r in p.regions)
    assert ids == sorted(r["region_id"] for r in regions), "every region in exactly one part"
    for p in parts:
        x, y, pw, ph = p.box
        for r in p.regions:
            cx, cy = r["bbox"][0] + r["bbox"][2] / 2, r["bbox"][1] + r["bbox"][3] / 2
            assert x <= cx < x + pw and y <= cy < y + ph


def test_divide_stops_where_regions_crowd_into_a_few_pixels():
    crowd = [{"region_id": i, "bbox": [100.0, 100.0, 2.0, 2.0]} for i in range(5)]
    [part] = divide.split(crowd, 640, 480, limit=2)
    assert len(part.regions) == 5 and max(part.box[2:]) // 2 < divide.MIN_SIDE <= max(part.box[2:])


def test_geometry_composer_divides_and_stays_grounded(coffee_regions):
    image, regions = coffee_regions
    captions = registry.create("region_captioner", "attributes").caption(image, regions)
    whole = registry.create("scene_captioner", "geometry", {"divide_above": 0}).compose(image, regions, captions)
    parts = registry.create("scene_captioner", "geometry", {"divide_above": 4}).compose(image, regions, captions)
    assert "It shows" in whole.text and "In the" not in whole.text
    assert len(re.findall(r"In the (?:top |bottom )?(?:left|right|top|bottom) (?:half|quarter) of the image, it shows",
                          parts.text)) >= 2
    ids = {r["region_id"] for r in regions}
    for text in (whole.text, parts.text):
        assert grounding.is_well_formed(text)
        assert {rid for rid, _ in grounding.references(text)} <= ids
    # max_regions (8) caps the whole caption; divided, each part names up to 8, so all 9 are named
    assert len({rid for rid, _ in grounding.references(whole.text)}) == 8 < len(ids)
    assert {rid for rid, _ in grounding.references(parts.text)} == ids
    # crowded: bisected past quarters like the VLM composer, every region named across the parts
    crowded = registry.create("scene_captioner", "geometry", {"divide_above": 2}).compose(image, regions, captions)
    assert re.search(r"In the eighth at x [\d.]+-[\d.]+%, y [\d.]+-[\d.]+% of the image, it shows", crowded.text)
    assert {rid for rid, _ in grounding.references(crowded.text)} == ids


def test_tag_crops_defaults_to_tagging_each_crop():
    class Sizes(Tagger):
        def tag(self, image):
            return [Tag(f"{image.shape[1]}x{image.shape[0]}", 1.0, "sizes")]

    image = np.zeros((50, 80, 3), np.uint8)
    assert [t[0].label for t in Sizes().tag_crops(image, [(0, 0, 10, 20), (70.5, 45.2, 30, 30), (5, 5, 0, 0)])] == \
        ["10x20", "10x5", "1x1"]
    assert crop(image, (10, 10, 10, 10), pad=0.5).shape[:2] == (20, 20)


def test_palette_tags_dominant_colours():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :30] = (20, 40, 200)
    tags = registry.create("tagger", "palette").tag(image)
    assert [t.label for t in tags] == ["blue", "black"] and tags[0].score == pytest.approx(0.75, abs=0.02)


def test_profile_overrides_params_file_and_is_checked(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "big.yaml").write_text("segment:\n  max_regions: 99\n")
    (tmp_path / "params.yaml").write_text("profile: big\nsegment:\n  max_regions: 5\n  nms_iou: 0.5\n")
    p = params.load(tmp_path / "params.yaml")
    assert p["segment"]["max_regions"] == 99 and p["segment"]["nms_iou"] == 0.5
    (tmp_path / "profiles" / "big.yaml").write_text("segmnt:\n  max_regions: 99\n")
    with pytest.raises(params.ParamsError, match="segmnt"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("profile: nope\n")
    with pytest.raises(params.ParamsError, match="not found"):
        params.load(tmp_path / "params.yaml")


def test_the_shipped_gpu_profile_names_registered_backends_and_options(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: gpu\n")
    p = params.load(tmp_path / "params.yaml")
    tag, seg, cap, scene = p["tag"], p["segment"], p["caption_regions"], p["caption_scene"]
    chosen = [("tagger", n, tag) for n in tag["taggers"]] + [("detector", n, tag) for n in tag["detectors"]] + [
        ("prompted_segmenter", seg["prompted"], seg), ("mask_generator", seg["everything"], seg),
        ("tagger", seg["crop_tagger"], tag), ("region_captioner", cap["captioner"], cap),
        ("verifier", cap["verifier"], cap), ("scene_captioner", scene["composer"], scene)]
    listed = {(b.step, b.name): b for b in registry.backends()}
    for step, name, section in chosen:
        info = listed[(step, name)]
        assert info.device == "gpu", (step, name)
        unknown = set(section.get(name) or {}) - set(info.cls.defaults)
        assert not unknown, f"{step} {name}: unknown options {unknown}"


def test_backends_json_lists_an_embedded_and_a_production_backend_per_step():
    from typer.testing import CliRunner

    from groundcap.cli.app import app

    out = CliRunner().invoke(app, ["backends", "--json"])
    assert out.exit_code == 0, out.output
    listing = json.loads(out.stdout)
    assert isinstance(listing["cuda_available"], bool)
    kinds = {}
    for b in listing["backends"]:
        kinds.setdefault(b["step"], set()).add(b["kind"])
        assert b["runnable"] == (not b["missing"])
    assert set(kinds) == set(registry.STEPS)
    assert all(k == {"embedded", "production"} for k in kinds.values()), kinds


def test_captions_the_captioner_could_not_write_are_rejected_without_asking_the_verifier():
    from groundcap.annotators.base import Verdict, Verifier
    from groundcap.stages.caption_regions import _verify

    class Recording(Verifier):
        seen: list = []

        def verify(self, image, regions, captions):
            self.seen.extend(c.region_id for c in captions)
            return [Verdict(c.region_id, True, "fine") for c in captions]

    captions = [RegionCaption(0, "a cup", "A cup."), RegionCaption(1, "", "", {"error": "malformed after 3 attempts"})]
    unwritten = [RegionCaption(2, "", "", {"error": "no reply"})]
    verdicts, nothing_asked = _verify(Recording(), [(None, [], captions), (None, [], unwritten)])
    assert Recording.seen == [0]  # one image asked about its written caption; the other not at all
    assert [(v.accepted, v.reason) for v in verdicts] == [(True, "fine"), (False, "malformed after 3 attempts")]
    assert [(v.accepted, v.reason) for v in nothing_asked] == [(False, "no reply")]
    assert _verify(None, [(None, [], captions)]) == [[None, None]]
