"""The embedded CPU annotators and the entity merge, on real sample photos and synthetic images."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from skimage import data

from groundcap import colors, grounding, masks
from groundcap.annotators import registry
from groundcap.annotators.backends.geometry import colorfulness, relation
from groundcap.annotators.base import Detection, Mask, RegionCaption
from groundcap.annotators.entities import resolve_entities


def rect_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def region(rid, mask, label="region", score=1.0, text=None):
    rle = masks.encode(mask)
    return {"region_id": rid, "segmentation": rle, "bbox": masks.bbox(rle), "area": masks.area(rle), "label": label,
            "label_score": score, "source": "test", "granularity": "object", "parent_id": None,
            "predicted_iou": None, "stability_score": None, "text": text}


def mask_iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


# --- registry ------------------------------------------------------------------------------------

def test_registry_lists_the_embedded_backends():
    expected = {"detector": {"haar", "rapidocr"}, "prompted_segmenter": {"grabcut"}, "mask_generator": {"felzenszwalb"},
                "concept_segmenter": {"color_regions"},
                "region_captioner": {"attributes"}, "scene_captioner": {"geometry"}}
    for step, names in expected.items():
        infos = {i.name: i for i in registry.backends(step)}
        assert names <= set(infos), step
        assert all(infos[n].device == "cpu" and not infos[n].missing() for n in names)


# --- detectors -----------------------------------------------------------------------------------

def test_haar_finds_the_astronauts_face_and_nothing_on_flat_gray(astronaut):
    haar = registry.create("detector", "haar", {"cascades": ["frontalface_default", "fullbody"], "min_neighbors": 6,
                                                 "min_size_frac": 0.06})
    dets = haar.detect(astronaut, [])
    faces = [d for d in dets if d.label == "face"]
    assert len(faces) == 1
    x, y, w, h = faces[0].bbox
    assert 180 < x + w / 2 < 260 and 70 < y + h / 2 < 150 and 60 < w < 130  # Eileen Collins' face
    assert 0.5 < faces[0].score < 1.0 and faces[0].source == "haar"
    assert haar.detect(astronaut, []) == dets  # deterministic
    assert haar.detect(np.full((256, 256, 3), 128, np.uint8), []) == []


def test_haar_scales_boxes_back_from_the_working_copy(astronaut):
    big = np.kron(astronaut, np.ones((2, 2, 1), np.uint8))  # 1024 x 1024
    haar = registry.create("detector", "haar", {"cascades": ["frontalface_default"], "work_side": 512})
    (face,) = haar.detect(big, [])
    x, y, w, h = face.bbox
    assert 360 < x + w / 2 < 520 and 140 < y + h / 2 < 300 and 120 < w < 260
    with pytest.raises(ValueError, match="unknown Haar cascade"):
        registry.create("detector", "haar", {"cascades": ["no_such_cascade"]})


def rendered_text(word: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (360, 100), "white")
    ImageDraw.Draw(img).text((14, 24), word, fill=(20, 20, 20), font=ImageFont.load_default(size=40))
    return np.asarray(img)


@pytest.mark.slow  # RapidOCR's ONNX models load and run: over 5 s
def test_rapidocr_reads_rendered_text():
    image = rendered_text("GROUNDCAP 42")
    ocr = registry.create("detector", "rapidocr", {"min_score": 0.6})
    dets = ocr.detect(image, [])
    assert dets and all(d.label == "text" and d.source == "rapidocr" for d in dets)
    hit = [d for d in dets if "GROUNDCAP" in d.text.replace(" ", "").upper()]
    assert hit, [d.text for d in dets]
    ink = np.argwhere(image.min(2) < 128)  # the rendered glyphs, (y, x)
    x, y, w, h = hit[0].bbox
    assert x <= ink[:, 1].min() + 4 and x + w >= ink[:, 1].max() - 4 and y <= ink[:, 0].min() + 4
    assert x >= 0 and y >= 0 and x + w <= image.shape[1] and y + h <= image.shape[0]
    strict = registry.create("detector", "rapidocr", {"min_score": 1.01})
    assert strict.detect(image, []) == []


# --- masks ---------------------------------------------------------------------------------------

def disc_image(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (40, 70, 190)
    image[disc] = (220, 40, 30)
    return image, disc


@pytest.mark.parametrize("shape, work_side", [((200, 200), 512), ((300, 400), 128)])
def test_grabcut_segments_a_disc_from_its_box(shape, work_side):
    h, w = shape
    image, disc = disc_image(h, w, h // 2, w // 2, min(h, w) // 4)
    ys, xs = np.nonzero(disc)
    box = (xs.min() - 6.0, ys.min() - 6.0, xs.max() - xs.min() + 12.0, ys.max() - ys.min() + 12.0)
    seg = registry.create("prompted_segmenter", "grabcut", {"work_side": work_side, "iterations": 3})
    det = Detection("ball", 0.8, box, "test", text="42")
    (m,) = seg.segment(image, [det])
    assert m.rle["size"] == [h, w]
    assert mask_iou(masks.decode(m.rle), disc) > 0.8
    assert (m.label, m.score, m.text, m.source, m.granularity) == ("ball", 0.8, "42", "grabcut", "object")
    assert seg.segment(image, [det])[0].rle == m.rle  # deterministic


def test_grabcut_returns_none_for_a_degenerate_box():
    image, _ = disc_image(64, 64, 32, 32, 10)
    seg = registry.create("prompted_segmenter", "grabcut", {})
    assert seg.segment(image, [Detection("x", 1.0, (70.0, 70.0, 0.0, 0.0), "test")]) == [None]


def test_felzenszwalb_recovers_flat_blocks_at_full_resolution():
    h, w = 120, 180
    image = np.zeros((h, w, 3), np.uint8)
    blocks = [(0, 60, (200, 30, 30)), (60, 120, (30, 160, 40)), (120, 180, (30, 40, 200))]
    for x0, x1, rgb in blocks:
        image[:, x0:x1] = rgb
    gen = registry.create("mask_generator", "felzenszwalb", {"scale": 100, "sigma": 0.5, "min_size_frac": 0.05,
                                                             "work_side": 90})
    out = gen.generate(image)
    assert len(out) == 3
    decoded = [masks.decode(m.rle) for m in out]
    for x0, x1, _ in blocks:
        truth = rect_mask(h, w, 0, h, x0, x1)
        assert max(mask_iou(d, truth) for d in decoded) > 0.97
    assert all(m.score > 0.99 and m.label == "region" and m.source == "felzenszwalb" for m in out)  # flat colour
    assert {m.granularity for m in out} == {"stuff"}  # each touches the border and covers 1/3


def test_color_regions_segments_each_area_of_a_colour_phrase_and_reads_no_other_phrase():
    image = np.full((120, 180, 3), (30, 40, 200), np.uint8)  # blue all round
    image[20:50, 20:60] = image[70:100, 110:170] = (200, 30, 30)  # two red boxes
    image[30:33, 100:103] = (200, 30, 30)  # a speck: opened away
    seg = registry.create("concept_segmenter", "color_regions", {"work_side": 90})
    out = seg.segment(image, ["red", "Blue", "dog", "red", "grey"])
    assert [(m.label, m.granularity, m.source) for m in out] == [("red", "object", "color_regions")] * 2 + [
        ("Blue", "stuff", "color_regions")]  # each phrase once; no model here reads "dog"; no gray pixels
    for m, box in zip(out, [rect_mask(120, 180, 70, 100, 110, 170), rect_mask(120, 180, 20, 50, 20, 60)],
                      strict=False):  # the larger red box first
        assert mask_iou(masks.decode(m.rle), box) > 0.9 and m.score == pytest.approx(box.mean(), abs=0.01)
    assert seg.segment(image, ["dog"]) == [] and seg.segment(image, ["red"]) == out[:2]


def test_the_segment_stage_adds_a_concept_segmenters_masks_of_the_tags():
    import io

    from PIL import Image

    from groundcap import params
    from groundcap.pipeline import order

    image = np.full((120, 180, 3), (30, 40, 200), np.uint8)
    image[20:50, 20:60] = image[70:100, 110:170] = (200, 30, 30)
    p = params.defaults()
    p["segment"] = {**p["segment"], "concept": "color_regions", "color_regions": {"work_side": 90}}
    stage = order.stage("segment")
    stage.setup(params.subset(p, (*stage.param_keys, "executor")))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    row = stage.process({"image_id": "x", "bytes": buffer.getvalue(), "given": None},
                        {"image_id": "x", "tags": [{"label": "red", "score": 0.5, "source": "palette"}],
                         "detections": []})
    assert [s["backend"] for s in row["provenance"]] == ["grabcut", "color_regions", "felzenszwalb"]
    red = [r for r in row["regions"] if r["source"] == "color_regions"]
    assert [r["label"] for r in red] == ["red", "red"] and row["regions"][:2] == red  # labelled masks go first


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("crop_prompts", [False, True])
def test_the_embedded_crop_loop_names_class_agnostic_masks_and_prompts_the_concept_segmenter(crop_prompts):
    """The CPU counterpart of PancapEngine's loop: the palette tags each felzenszwalb mask's crop; the red
    square, under the palette's 15% share for the whole image, is named "red"; with ``crop_prompts``
    "red" prompts ``color_regions``, which finds it and the red sliver felzenszwalb merged into the blue."""
    from groundcap import params
    from groundcap.pipeline import order

    image = np.full((120, 180, 3), (30, 40, 200), np.uint8)
    image[20:60, 20:70] = (200, 30, 30)  # 9% of the image
    image[90:118, 120:126] = (200, 30, 30)  # a sliver: below felzenszwalb's min size, inside the blue
    p = params.defaults()
    p["tag"] = {**p["tag"], "detectors": ["haar"]}  # prompted too (its cascades' own labels: nothing red here)
    p["segment"] = {**p["segment"], "concept": "color_regions", "crop_tagger": "palette",
                    "crop_prompts": crop_prompts, "color_regions": {"work_side": 90, "min_area_frac": 0.005},
                    "felzenszwalb": {"min_size_frac": 0.05}}
    problems: list[str] = []
    stage = order.stage("segment")
    stage.check_params(p, problems)
    assert problems == []
    stage.setup(params.subset(p, (*stage.param_keys, "executor")))
    tags = [{"label": "blue", "score": 0.9, "source": "palette"}]  # the whole image's palette: no red
    [row] = stage.process_batch([({"image_id": "x", "bytes": _png(image), "given": None},
                                  {"image_id": "x", "tags": tags, "detections": []})])
    named = [(r["label"], r["source"]) for r in row["regions"]]
    assert ("region", "felzenszwalb") not in named  # every class-agnostic mask named by its crop
    if crop_prompts:  # the crop tag prompted the concept segmenter: both red areas, before the everything masks
        assert named.count(("red", "color_regions")) == 2 and ("red", "felzenszwalb+palette") not in named
    else:
        assert ("red", "felzenszwalb+palette") in named and ("red", "color_regions") not in named
    assert [s["backend"] for s in row["provenance"]] == ["grabcut", "color_regions", "felzenszwalb", "palette",
                                                         *(["haar"] if crop_prompts else [])]


def test_crop_prompts_without_a_crop_tagger_is_refused():
    from groundcap import params
    from groundcap.pipeline import order

    p = params.defaults()
    p["segment"] = {**p["segment"], "crop_prompts": True}
    problems: list[str] = []
    order.stage("segment").check_params(p, problems)
    assert problems == ["params: segment.crop_prompts needs segment.crop_tagger: without crop tags nothing prompts "
                        "the detectors"]


def test_felzenszwalb_calls_an_interior_segment_an_object():
    image = np.full((100, 100, 3), (120, 120, 120), np.uint8)
    image[40:60, 40:60] = (230, 200, 20)
    out = registry.create("mask_generator", "felzenszwalb", {"scale": 100, "min_size_frac": 0.01}).generate(image)
    square = rect_mask(100, 100, 40, 60, 40, 60)
    best = max(out, key=lambda m: mask_iou(masks.decode(m.rle), square))
    assert mask_iou(masks.decode(best.rle), square) > 0.9 and best.granularity == "object"
    assert max(out, key=lambda m: masks.area(m.rle)).granularity == "stuff"  # the gray surround


# --- entity merge --------------------------------------------------------------------------------

def mk(mask, label="region", score=0.5, source="gen"):
    return Mask(masks.encode(mask), label, score, source)


def test_resolve_entities_gives_disjoint_prioritised_regions():
    H = W = 100
    p_low = mk(rect_mask(H, W, 10, 40, 10, 40), "face", 0.9, "grabcut")
    p_high = mk(rect_mask(H, W, 30, 60, 30, 60), "cat face", 0.95, "grabcut")
    g_big = mk(rect_mask(H, W, 0, 50, 0, 100), score=0.4)
    g_dup = mk(rect_mask(H, W, 0, 48, 0, 100), score=0.3)  # IoU 0.96 with g_big: NMS drops it
    g_under = mk(rect_mask(H, W, 32, 58, 32, 58), score=0.9)  # all inside p_high
    g_tiny = mk(rect_mask(H, W, 90, 95, 90, 95), score=0.9)  # 25 px < 0.5% of the image
    g_low = mk(rect_mask(H, W, 55, 100, 0, 100), score=0.2)
    regions = resolve_entities([p_low, p_high], [g_tiny, g_under, g_low, g_dup, g_big], H, W,
                               min_area_frac=0.005, nms_iou=0.7, max_regions=10)

    assert [r["region_id"] for r in regions] == list(range(len(regions)))
    assert [r["label"] for r in regions[:2]] == ["cat face", "face"]  # prompted first, by score
    assert regions[0]["area"] == 900 and regions[1]["area"] == 900 - 100  # p_low minus p_high
    generated = [r for r in regions if r["label"] == "region"]
    assert [r["area"] for r in generated] == [5000 - 900 - 600 + 100, 4500 - 5 * 30]  # g_big, g_low by area
    decoded = [masks.decode(r["segmentation"]) for r in regions]
    for a, b in itertools.combinations(decoded, 2):
        assert not (a & b).any()
    for r, d in zip(regions, decoded, strict=True):
        ys, xs = np.nonzero(d)
        assert r["area"] == d.sum()
        assert r["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert set(r) == {"region_id", "segmentation", "bbox", "area", "label", "label_score", "source", "granularity",
                          "parent_id", "predicted_iou", "stability_score", "text"}
        assert r["parent_id"] is None

    capped = resolve_entities([p_low, p_high], [g_big, g_low], H, W, min_area_frac=0.005, nms_iou=0.7, max_regions=3)
    assert [r["label"] for r in capped] == ["cat face", "face", "region"] and capped[2]["area"] == 3600
    with pytest.raises(ValueError):
        resolve_entities([p_low], [], 50, 50, min_area_frac=0.0, nms_iou=0.7, max_regions=5)


def test_stuff_labels_become_one_stuff_entity_per_label_whichever_backend_named_them():
    """A detector's two sky boxes (the GPU path: tags prompt the detectors, SAM segments the boxes) resolve to one
    "stuff" region, as SAM 3's stuff phrases and the CPU stand-in's border segments do; things stay objects."""
    H = W = 100
    sky_left, sky_right = mk(rect_mask(H, W, 0, 30, 0, 45), "sky", 0.6, "sam"), mk(
        rect_mask(H, W, 0, 30, 55, 100), "Sky", 0.8, "sam")
    dog = mk(rect_mask(H, W, 50, 80, 20, 60), "dog", 0.9, "sam")
    road = mk(rect_mask(H, W, 80, 100, 0, 100), "road", 0.5, "given:coco")
    regions = resolve_entities([sky_left, dog, sky_right], [], H, W, given=[road], min_area_frac=0.005, nms_iou=0.7,
                               max_regions=10)
    by_label = {r["label"]: r for r in regions}
    assert sorted(by_label) == ["Sky", "dog", "road"]  # one sky, under the best-scoring box's label
    assert by_label["Sky"]["granularity"] == "stuff" and by_label["Sky"]["area"] == 30 * 45 + 30 * 45
    assert by_label["road"]["granularity"] == "stuff" and by_label["dog"]["granularity"] == "object"


def test_parts_link_to_their_entity_and_the_cpu_captions_say_whose_part(astronaut):
    """A part region (SAM's smaller multimask outputs, SA-1B's nested masks) gets its entity's id as
    ``parent_id``, and the CPU stand-in's captions (both captioners) name that entity."""
    H, W = astronaut.shape[:2]
    person = mk(rect_mask(H, W, 0, 512, 100, 450), "person", 0.9, "sam")
    face = Mask(masks.encode(rect_mask(H, W, 80, 200, 180, 300)), "face", 0.8, "sam", "part")
    regions = resolve_entities([person], [face], H, W, min_area_frac=0.005, nms_iou=0.7, max_regions=10,
                               max_parts=4)
    assert [(r["label"], r["granularity"], r["parent_id"]) for r in regions] == [
        ("person", "object", None), ("face", "part", 0)]
    caps = registry.create("region_captioner", "attributes", {}).caption(astronaut, regions)
    assert not caps[0].short.endswith("of the person") and caps[0].facts.get("part_of") is None
    assert caps[1].short.endswith(" face of the person") and caps[1].facts["part_of"] == "person"
    assert " face of the person " in caps[1].detailed
    second = registry.create("region_captioner", "hsv_sketch", {}).caption(astronaut, regions)  # crosscheck's
    assert second[1].short.endswith(" face of the person") and not second[0].short.endswith("of the person")
    orphan = {**regions[1], "parent_id": 7}
    with pytest.raises(ValueError, match="part of region 7, which is not a region of its image"):
        registry.create("region_captioner", "attributes", {}).caption(astronaut, [regions[0], orphan])


# --- colours and region captions -----------------------------------------------------------------

@pytest.mark.parametrize("rgb, name", [
    ((255, 0, 0), "red"), ((150, 20, 25), "red"), ((0, 160, 0), "green"), ((0, 0, 255), "blue"),
    ((0, 0, 128), "blue"), ((255, 230, 0), "yellow"), ((255, 140, 0), "orange"), ((128, 0, 128), "purple"),
    ((255, 182, 193), "pink"), ((139, 69, 19), "brown"), ((0, 0, 0), "black"), ((40, 10, 10), "black"),
    ((255, 255, 255), "white"), ((128, 128, 128), "gray"), ((120, 125, 130), "gray"),
])
def test_named_colours(rgb, name):
    assert colors.color_shares(np.array([rgb], np.uint8)) == [(name, 1.0)]


def test_colour_shares_are_fractions_sorted_desc():
    pixels = np.array([(255, 0, 0)] * 6 + [(255, 255, 255)] * 3 + [(0, 0, 255)], np.uint8)
    assert colors.color_shares(pixels) == [("red", 0.6), ("white", 0.3), ("blue", 0.1)]


def red_square_scene():
    image = np.full((90, 90, 3), 235, np.uint8)
    image[5:25, 5:25] = (210, 20, 20)
    return image, rect_mask(90, 90, 5, 25, 5, 25)


def test_attributes_caption_states_measured_facts():
    image, square = red_square_scene()
    captioner = registry.create("region_captioner", "attributes", {})
    (cap,) = captioner.caption(image, [region(3, square)])
    f = cap.facts
    assert json.loads(json.dumps(f)) == f  # stored as JSON, so plain Python types only
    assert all(type(v) in (str, float, int, bool, list, type(None)) for v in f.values())
    assert cap.region_id == 3
    assert f["colors"] == [["red", 1.0]] and f["position"] == "top left"
    assert f["size"] == "small" and f["size_frac"] == round(400 / 8100, 4)
    assert (f["aspect"], f["shape"], f["texture"]) == ("square-ish", "compact", "smooth") and f["solidity"] == 1.0
    assert cap.short == "a red region"
    assert "top left" in cap.detailed and "red (100%)" in cap.detailed and "covering 5%" in cap.detailed
    stated = {int(p) for p in re.findall(r"(\d+)%", cap.detailed)}
    assert stated == {round(100 * f["size_frac"]), *(round(100 * s) for _, s in f["colors"])}


def test_attributes_texture_shape_and_text():
    rng = np.random.default_rng(0)
    image = np.full((120, 160, 3), 30, np.uint8)
    image[60:, :80] = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)  # noise, bottom left
    image[10:30, 90:150] = 250  # white plate at the top right
    ell = np.zeros((120, 160), bool)
    ell[60:, :20] = True
    ell[100:, :60] = True  # an L shape in the noise, 60 x 60
    noise, plate = region(0, ell), region(1, rect_mask(120, 160, 10, 30, 90, 150), "text", 0.9, "SCIKIT")
    c_noise, c_plate = registry.create("region_captioner", "attributes", {}).caption(image, [noise, plate])
    assert c_noise.facts["texture"] == "textured" and c_noise.facts["shape"] == "irregular"
    assert c_noise.facts["position"] == "bottom left" and c_noise.facts["aspect"] == "square-ish"
    assert c_plate.facts["texture"] == "smooth" and c_plate.facts["aspect"] == "wide"
    assert c_plate.facts["text"] == "SCIKIT" and c_plate.facts["colors"] == [["white", 1.0]]
    assert c_plate.short == 'white text reading "SCIKIT"' and 'reads "SCIKIT"' in c_plate.detailed


# --- scene composer ------------------------------------------------------------------------------

def two_squares():
    image = np.full((60, 120, 3), 128, np.uint8)
    image[20:40, 10:30] = (30, 40, 200)
    image[20:40, 90:110] = (210, 20, 20)
    return image, [region(5, rect_mask(60, 120, 20, 40, 10, 30)), region(7, rect_mask(60, 120, 20, 40, 90, 110))]


def test_geometry_scene_is_grounded_and_states_left_of():
    image, regions = two_squares()
    caps = registry.create("region_captioner", "attributes", {}).caption(image, regions)
    text = registry.create("scene_captioner", "geometry", {}).compose(image, regions, caps).text
    assert grounding.is_well_formed(text)
    refs = grounding.references(text)
    assert {rid for rid, _ in refs} == {5, 7}
    assert "<r5>a blue region</r5> on the left" in text and "<r7>a red region</r7> on the right" in text
    assert "<r7>The red region</r7> is to the right of <r5>the blue region</r5>." in text
    assert "landscape" in text and "2 regions" in text and "gray" in text


def test_geometry_mentions_detections_first_and_caps_regions():
    image, regions = two_squares()
    regions[1]["label"] = "sign"
    caps = [RegionCaption(5, "a blue region", ""), RegionCaption(7, 'a sign reading "<r9>"', "")]
    text = registry.create("scene_captioner", "geometry", {"max_regions": 1}).compose(image, regions, caps).text
    assert grounding.is_well_formed(text)
    assert [rid for rid, _ in grounding.references(text)] == [7]  # the labelled region, though no larger


def test_relations_and_colorfulness():
    W = H = 100

    def r(x, y, w, h):
        return {"bbox": [x, y, w, h], "centroid": (x + w / 2, y + h / 2)}

    assert relation(r(0, 0, 20, 20), r(50, 0, 20, 20), W, H) == "left of"
    assert relation(r(50, 0, 20, 20), r(0, 10, 20, 20), W, H) == "right of"
    assert relation(r(0, 0, 20, 20), r(0, 60, 20, 20), W, H) == "above"
    assert relation(r(40, 40, 10, 10), r(20, 20, 60, 60), W, H) == "within"
    assert relation(r(20, 20, 60, 60), r(40, 40, 10, 10), W, H) == "around"
    assert relation(r(40, 40, 20, 20), r(45, 35, 20, 20), W, H) == "next to"
    gray = np.full((10, 3), 128, np.uint8)
    assert colorfulness(gray) == 0.0
    assert colorfulness(np.array([(255, 0, 0), (0, 0, 255)] * 5, np.uint8)) > 100


# --- the chain on a real photo -------------------------------------------------------------------

def test_embedded_chain_on_astronaut(astronaut):
    H, W = astronaut.shape[:2]
    dets = registry.create("detector", "haar", {"cascades": ["frontalface_default"]}).detect(astronaut, [])
    prompted = [m for m in registry.create("prompted_segmenter", "grabcut", {}).segment(astronaut, dets) if m]
    generated = registry.create("mask_generator", "felzenszwalb", {}).generate(astronaut)
    regions = resolve_entities(prompted, generated, H, W, min_area_frac=0.005, nms_iou=0.7, max_regions=24)
    assert regions[0]["label"] == "face" and 0.01 < regions[0]["area"] / (H * W) < 0.06
    total = sum(r["area"] for r in regions)
    assert masks.area(masks.union([r["segmentation"] for r in regions])) == total  # disjoint
    caps = registry.create("region_captioner", "attributes", {}).caption(astronaut, regions)
    assert caps[0].short.endswith(" face") and len(caps) == len(regions)
    scene = registry.create("scene_captioner", "geometry", {}).compose(astronaut, regions, caps).text
    ids = {r["region_id"] for r in regions}
    refs = grounding.references(scene)
    assert grounding.is_well_formed(scene) and refs and {rid for rid, _ in refs} <= ids
    assert refs[0][0] == 0  # the detection is mentioned first


def test_grabcut_falls_back_to_the_box_for_a_page_wide_text_line():
    """A text line spanning the page leaves GrabCut no background: the box stands in, marked as such."""
    image = np.full((60, 200, 3), 255, np.uint8)
    image[20:40, :, :] = 0  # a dark band across the whole width
    det = Detection("text", 0.9, (0.0, 20.0, 200.0, 20.0), "rapidocr", "hello")
    got = registry.create("prompted_segmenter", "grabcut", {}).segment(image, [det])[0]
    if got.source == "grabcut":  # GrabCut managed after all: then its mask must be the band
        assert masks.iou([got.rle], [masks.encode(image[..., 0] == 0)])[0, 0] > 0.8
    else:
        assert got.source == "box" and got.text == "hello"
        assert masks.bbox(got.rle) == [0.0, 20.0, 200.0, 20.0]
    off = registry.create("prompted_segmenter", "grabcut", {"box_fallback": False})
    blank = np.full((60, 200, 3), 128, np.uint8)
    assert off.segment(blank, [Detection("text", 0.9, (0.0, 0.0, 200.0, 60.0), "rapidocr")]) == [None]
