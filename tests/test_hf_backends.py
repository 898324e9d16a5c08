"""The transformers backends on tiny random-weight checkpoints (``tiny_hf``), loaded from disk on the CPU.

Random weights make tags, boxes and masks meaningless, so thresholds are 0 and the tests check what
does not depend on quality: one output per input in order, valid boxes and RLE, scores in range,
batching equal to one at a time, and the bookkeeping (labels, granularity, NMS, prompts).
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from skimage import data

import tiny_hf
from groundcap import masks
from groundcap.annotators import registry
from groundcap.annotators.backends.hf_sam import point_grid, stability_score
from groundcap.annotators.base import Detection, Tag
from groundcap.annotators.detections import box_iou, nms_per_label
from groundcap.models import hub
from groundcap.prompts import read_vocabulary

VOCABULARY = ["cat", "dog", "person", "traffic light", "sky", "grass", "road", "wall", "tree", "car", "t-shirt"]
pytestmark = pytest.mark.models


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny_hf")
    vocabulary = root / "vocabulary.txt"
    vocabulary.write_text("# test labels\n" + "\n".join(VOCABULARY + ["cat", ""]) + "\n", encoding="utf-8")
    return {
        "clip": tiny_hf.build_clip(root / "clip"),
        "owlv2": tiny_hf.build_owlv2(root / "owlv2"),
        "grounding_dino": tiny_hf.build_grounding_dino(root / "grounding_dino", VOCABULARY),
        "sam": tiny_hf.build_sam(root / "sam"),
        "vocabulary": str(vocabulary),
    }


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return data.chelsea()  # 300 x 451: not square, so x and y scale differently


def create(step: str, name: str, model: str, **options):
    """The backend through the registry, loading the saved checkpoint ``model`` with ``from_pretrained``."""
    return registry.create(step, name, {"model": model, "device": "cpu", **options})


def inside(box, height: int, width: int) -> bool:
    x, y, w, h = box
    return w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width + 1e-6 and y + h <= height + 1e-6


# --- shared helpers ------------------------------------------------------------------------------

def test_device_and_dtype_options():
    assert hub.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert hub.resolve_device("cuda:1") == "cuda:1"
    assert hub.resolve_dtype("auto", "cpu") == torch.float32
    assert hub.resolve_dtype("auto", "cuda:0", "float32") == torch.float32  # Grounding DINO's choice
    from groundcap.annotators.backends.hf_detect import GroundingDino, Owlv2
    assert GroundingDino.gpu_dtype == "float32" and Owlv2.gpu_dtype == "bfloat16"
    assert hub.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        hub.resolve_dtype("int8", "cpu")
    assert hub.xywh_to_xyxy((1, 2, 3, 4)) == (1.0, 2.0, 4.0, 6.0)
    assert hub.xyxy_to_xywh(hub.xywh_to_xyxy((1.5, 2, 3, 4.25))) == (1.5, 2.0, 3.0, 4.25)
    assert [list(b) for b in hub.batches(list(range(5)), 2)] == [[0, 1], [2, 3], [4]]


def test_a_checkpoint_loads_once_per_process(tiny):
    a = create("prompted_segmenter", "sam", tiny["sam"])
    b = create("prompted_segmenter", "sam", tiny["sam"], box_batch=8)
    assert a.hf.model is b.hf.model and a.hf.processor is b.hf.processor
    assert a.provenance() == {"backend": "sam", "version": "1", "model": tiny["sam"]}
    with pytest.raises(ValueError, match="no option"):
        create("prompted_segmenter", "sam", tiny["sam"], box_threshold=0.5)


def test_registry_lists_the_transformers_backends():
    infos = {(i.step, i.name): i for i in registry.backends()}
    for key in [("tagger", "clip"), ("detector", "grounding_dino"), ("detector", "owlv2"),
                ("prompted_segmenter", "sam"), ("prompted_segmenter", "sam2"), ("mask_generator", "sam_everything"),
                ("concept_segmenter", "sam3")]:
        assert infos[key].device == "gpu" and {"torch", "transformers"} <= set(infos[key].needs)
    for key in [("prompted_segmenter", "sam2"), ("concept_segmenter", "sam3")]:  # their processors need torchvision
        assert "torchvision" in infos[key].needs
        assert infos[key].missing() == ([] if importlib.util.find_spec("torchvision") else ["torchvision"])


# --- CLIP tagger ---------------------------------------------------------------------------------

def test_packaged_vocabulary_is_a_few_hundred_distinct_nouns():
    labels = read_vocabulary("")
    assert 250 <= len(labels) == len(set(labels))
    assert {"person", "dog", "sky", "grass", "road", "wall", "traffic light"} <= set(labels)


def test_clip_tags_are_vocabulary_labels_with_probabilities(tiny, cat):
    def clip(**options):
        return create("tagger", "clip", tiny["clip"], vocabulary=tiny["vocabulary"], **options)

    five = clip(top_k=5, min_score=0.0)
    assert five.labels == VOCABULARY  # comment, blank line and duplicate dropped
    tags = five.tag(cat)
    assert len(tags) == 5 and all(t.source == "clip" and t.label in VOCABULARY for t in tags)
    assert all(0.0 <= t.score <= 1.0 for t in tags) and sum(t.score for t in tags) <= 1.0 + 1e-6
    assert [t.score for t in tags] == sorted((t.score for t in tags), reverse=True)
    everything = clip(top_k=100, min_score=0.0).tag(cat)
    assert sum(t.score for t in everything) == pytest.approx(1.0, abs=1e-5)  # a softmax over the vocabulary
    strict = clip(top_k=100, min_score=everything[3].score).tag(cat)
    assert [t.label for t in strict] == [t.label for t in everything[:4]]
    assert five.provenance()["prompt_hash"] != clip(template="$label").provenance()["prompt_hash"]


def test_clip_tag_crops_batched_equals_one_at_a_time(tiny, cat):
    clip = create("tagger", "clip", tiny["clip"], vocabulary=tiny["vocabulary"], top_k=3, min_score=0.0, batch_size=2)
    boxes = [(0, 0, 451, 300), (10, 20, 100, 80), (200, 100, 3, 150), (440, 290, 11, 10), (50, 50, 1, 1)]
    batched = clip.tag_crops(cat, boxes)
    assert len(batched) == len(boxes)
    for box, tags in zip(boxes, batched, strict=True):
        (alone,) = clip.tag_crops(cat, [box])
        assert [t.label for t in tags] == [t.label for t in alone]
        np.testing.assert_allclose([t.score for t in tags], [t.score for t in alone], rtol=1e-4, atol=1e-6)
    assert clip.tag_crops(cat, []) == []


def test_the_segment_stage_makes_a_region_the_crop_tagger_names_as_stuff_a_stuff_entity(tiny, cat, tmp_path):
    """The GPU path's class-agnostic regions get their names from CLIP crop tags; a stuff name makes the
    region stuff there too (a one-word vocabulary makes the tiny random CLIP name every crop "sky")."""
    import io

    from PIL import Image

    from groundcap import params
    from groundcap.pipeline import order

    (tmp_path / "sky.txt").write_text("sky\n", encoding="utf-8")
    p = params.defaults()
    p["tag"] = {**p["tag"], "clip": {"model": tiny["clip"], "device": "cpu", "vocabulary": str(tmp_path / "sky.txt")}}
    p["segment"] = {**p["segment"], "crop_tagger": "clip", "crop_tag_min_score": 0.5}
    stage = order.stage("segment")
    stage.setup(params.subset(p, (*stage.param_keys, "executor")))
    buffer = io.BytesIO()
    Image.fromarray(cat[::2, ::2]).save(buffer, format="PNG")
    row = stage.process({"image_id": "x", "bytes": buffer.getvalue(), "given": None},
                        {"image_id": "x", "tags": [], "detections": []})
    assert row["error"] is None and row["regions"]
    assert {(r["label"], r["granularity"]) for r in row["regions"]} == {("sky", "stuff")}


def test_clip_tags_a_batch_of_images_in_one_pass_as_it_tags_each(tiny, cat):
    """tag_batch (what the tag stage calls with a part's images) gives each image's tags; scores agree to
    float precision (a batched matmul may round the last bits differently: not byte-identical)."""
    clip = create("tagger", "clip", tiny["clip"], vocabulary=tiny["vocabulary"], top_k=3, min_score=0.0)
    images = [cat, cat[::-1].copy(), cat[:100, :200].copy()]
    for tags, image in zip(clip.tag_batch(images), images, strict=True):
        alone = clip.tag(image)
        assert [t.label for t in tags] == [t.label for t in alone]
        np.testing.assert_allclose([t.score for t in tags], [t.score for t in alone], rtol=1e-4, atol=1e-6)


# --- detectors -----------------------------------------------------------------------------------

def test_box_nms_keeps_the_best_of_overlapping_boxes():
    boxes = [hub.xyxy_to_xywh(b) for b in ([0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9])]
    dets = [Detection("x", s, tuple(b), "t") for b, s in zip(boxes, [0.5, 0.9, 0.3, 0.4], strict=True)]

    def kept(iou):
        return [dets.index(d) for d in nms_per_label(dets, iou)]

    assert kept(0.5) == [1, 2]
    assert kept(0.95) == [1, 0, 3, 2]


@pytest.mark.parametrize("name", ["owlv2", "grounding_dino"])
def test_detections_are_clipped_xywh_boxes_suppressed_per_label(tiny, cat, name):
    tags = [Tag(label, 0.5, "test") for label in ["cat", "Dog", "person", "cat"]]
    detector = create("detector", name, tiny[name], box_threshold=0.0, max_labels_per_call=2)
    dets = detector.detect(cat, tags)
    assert dets and len(dets) <= 100
    assert all(isinstance(d, Detection) and d.source == name and inside(d.bbox, 300, 451) for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    if name == "owlv2":
        assert {d.label for d in dets} <= {"cat", "Dog", "person"}  # each box takes its best query's tag
    for a, b in itertools.combinations(dets, 2):
        if a.label == b.label:
            assert box_iou(a.bbox, b.bbox) < 0.5  # no IoU of 0.5 or more
    assert detector.detect(cat, []) == []
    assert len(create("detector", name, tiny[name], box_threshold=0.0, max_detections=3).detect(cat, tags)) <= 3


def test_grounding_dino_chunks_fit_its_text_encoder(tiny):
    detector = create("detector", "grounding_dino", tiny["grounding_dino"], max_labels_per_call=4)
    labels = VOCABULARY * 2
    chunks = list(detector._chunks(labels))
    assert [label for chunk in chunks for label in chunk] == labels
    max_len = detector.hf.model.config.max_text_len  # 32 tokens in the tiny model
    for chunk in chunks:
        assert len(chunk) <= 4
        assert len(detector.hf.processor.tokenizer(detector._prompt(chunk))["input_ids"]) <= max_len
    assert detector._prompt(["Traffic Light", "st. bernard"]) == "traffic light. st bernard."


@pytest.mark.slow
def test_grounding_dino_maps_phrases_back_to_tags(tiny, cat):
    # text_threshold 0 makes every prompt token part of every box's phrase
    detector = create("detector", "grounding_dino", tiny["grounding_dino"], box_threshold=0.0, text_threshold=0.0)
    dets = detector.detect(cat, [Tag("Traffic Light", 0.9, "test")])
    assert dets and {d.label for d in dets} == {"Traffic Light"}  # the tag's own spelling
    merged = detector.detect(cat, [Tag("cat", 0.9, "test"), Tag("t-shirt", 0.9, "test")])
    assert {d.label for d in merged} == {"cat t - shirt"}  # a phrase spanning two tags keeps its text
    assert detector.detect(cat, [Tag("T-Shirt", 0.9, "test")])[0].label == "T-Shirt"


# --- SAM -----------------------------------------------------------------------------------------

def test_stability_score_is_the_iou_of_the_two_thresholded_masks():
    logits = torch.tensor([
        [[3.0, 0.5, -0.5], [-3.0, 2.0, 0.0]],  # > +1: 2 pixels; > -1: 5 pixels
        [[-2.0, -2.0, -2.0], [-2.0, -2.0, -2.0]],  # empty at both thresholds
        [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0]],  # stable
    ])
    np.testing.assert_allclose(stability_score(logits, 1.0).numpy(), [2 / 5, 0.0, 1.0])
    np.testing.assert_allclose(stability_score(logits, 0.4).numpy(), [3 / 4, 0.0, 1.0])


def test_point_grid_centres_cells():
    assert point_grid(2, 10, 20).tolist() == [[5.0, 2.5], [15.0, 2.5], [5.0, 7.5], [15.0, 7.5]]
    grid = point_grid(7, 300, 451)
    assert grid.shape == (49, 2) and (grid > 0).all() and (grid[:, 0] < 451).all() and (grid[:, 1] < 300).all()


@pytest.mark.slow
def test_sam_gives_one_mask_per_detection_in_order(tiny, cat):
    detections = [
        Detection("cat", 0.9, (100.0, 20.0, 250.0, 260.0), "test"),
        Detection("sign", 0.6, (0.0, 0.0, 40.5, 30.25), "test", text="STOP"),
        Detection("cat", 0.4, (300.0, 150.0, 151.0, 150.0), "test"),
    ] * 3
    sam = create("prompted_segmenter", "sam", tiny["sam"], box_batch=64)
    out = sam.segment(cat, detections)
    assert len(out) == len(detections) and any(m is not None for m in out)
    for det, mask in zip(detections, out, strict=True):
        if mask is None:
            continue
        assert (mask.label, mask.score, mask.text, mask.source, mask.granularity) == (det.label, det.score, det.text,
                                                                                       "sam", "object")
        binary = masks.decode(mask.rle)
        assert binary.shape == (300, 451) and binary.any()
        assert 0.0 <= mask.stability_score <= 1.0 and isinstance(mask.predicted_iou, float)
    one_by_one = create("prompted_segmenter", "sam", tiny["sam"], box_batch=1).segment(cat, detections)
    at_work_side = create("prompted_segmenter", "sam", tiny["sam"], box_batch=2, work_side=64).segment(cat, detections)
    for a, b, c in zip(out, one_by_one, at_work_side, strict=True):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            assert masks.iou([a.rle], [b.rle])[0, 0] > 0.999 and masks.iou([a.rle], [c.rle])[0, 0] > 0.999
            assert a.predicted_iou == pytest.approx(b.predicted_iou, abs=1e-5)
    assert sam.segment(cat, []) == []


@pytest.mark.slow
def test_sam_everything_keeps_masks_that_pass_the_thresholds(tiny, cat):
    options = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "min_area_frac": 0.01,
               "stability_offset": 0.0, "nms_iou": 0.7}
    generator = create("mask_generator", "sam_everything", tiny["sam"], points_per_batch=64, **options)
    out = generator.generate(cat)
    assert out
    for mask in out:
        assert mask.label == "" and mask.source == "sam_everything" and mask.granularity in {"object", "part"}
        assert masks.decode(mask.rle).shape == (300, 451)
        assert masks.area(mask.rle) >= 0.01 * 300 * 451
        assert mask.score == mask.predicted_iou >= 0.0 and mask.stability_score == 1.0  # offset 0: always stable
    ious = masks.iou([m.rle for m in out], [m.rle for m in out])
    assert (ious[np.triu_indices(len(out), 1)] <= 0.7 + 1e-3).all()
    assert [m.predicted_iou for m in out] == sorted((m.predicted_iou for m in out), reverse=True)
    # the same masks in smaller batches, up to float noise: a pixel or two, or near-tied scores swapping places
    again = create("mask_generator", "sam_everything", tiny["sam"], points_per_batch=5, **options).generate(cat)
    assert len(again) == len(out)
    match = masks.iou([m.rle for m in out], [m.rle for m in again]).argmax(1)
    assert sorted(match) == list(range(len(out)))
    for mask, j in zip(out, match, strict=True):
        assert masks.iou([mask.rle], [again[j].rle])[0, 0] > 0.999 and mask.granularity == again[j].granularity
    strict = create("mask_generator", "sam_everything", tiny["sam"], **{**options, "pred_iou_thresh": 2.0})
    assert strict.generate(cat) == []


def test_owlv2_truncates_a_label_longer_than_its_text_encoder(tiny, cat):
    """Owlv2Processor pads each query to max_length but does not truncate: one query past it made the batch
    ragged (a ValueError). Past the limit the query is cut, as the text encoder could read no more anyway."""
    detector = create("detector", "owlv2", tiny["owlv2"], box_threshold=0.0)
    max_length = detector.hf.processor.tokenizer.model_max_length  # 32 tokens, one a character, in the tiny model
    long = "extraordinarily long-handled wooden garden rake"
    assert len(detector.hf.processor.tokenizer(detector.query(long))["input_ids"]) > max_length
    dets = detector.detect(cat, [Tag("cat", 0.5, "test"), Tag(long, 0.5, "test")])
    assert dets and {d.label for d in dets} <= {"cat", long}


@pytest.mark.parametrize("name", ["owlv2", "grounding_dino"])
def test_bfloat16_boxes_are_scaled_to_pixels_in_float32(tiny, cat, name):
    """The processors scale boxes to pixels in the outputs' dtype: in bfloat16 an edge past 1,024 px snapped to
    a multiple of 8 (16 past 2,048). Scaled in float32, each box is the model's own box times the image size."""
    large = np.ascontiguousarray(np.repeat(np.repeat(cat, 5, 0), 3, 1))  # 1500 x 1353: both edges past 1,024 px
    detector = create("detector", name, tiny[name], dtype="bfloat16", box_threshold=0.0, max_detections=1000)
    assert detector.hf.model.dtype == torch.bfloat16
    raw = []
    hook = detector.hf.model.register_forward_hook(lambda module, args, out: raw.append(out.pred_boxes))
    try:
        dets = detector.detect(large, [Tag("cat", 0.5, "test")])
    finally:
        hook.remove()
    (boxes,) = raw
    cx, cy, w, h = boxes[0].double().unbind(-1)
    scale = (1500, 1500) if name == "owlv2" else (1353, 1500)  # OWLv2 pads the image to a square first
    exact = torch.stack([(cx - w / 2) * scale[0], (cy - h / 2) * scale[1], w * scale[0], h * scale[1]], -1)
    inner = [d for d in dets if d.bbox[0] > 0 and d.bbox[1] > 0 and d.bbox[0] + d.bbox[2] < 1353
             and d.bbox[1] + d.bbox[3] < 1500]  # not clipped to the image
    assert inner
    for det in inner:
        assert torch.isclose(exact, torch.tensor(det.bbox, dtype=torch.float64), atol=0.05).all(-1).any(), det.bbox


def test_crop_tags_prompt_a_real_detector_in_the_segment_stage(tiny):
    """PancapEngine's loop with a real prompted detector: the palette names the red square's crop "red", a tag
    the image's own tags ("blue") lack, so "red" alone prompts OWLv2 (random weights, box threshold 0: boxes
    for the prompt), whose boxes grabcut segments into regions labelled "red" that go before the felzenszwalb ones."""
    import io

    from PIL import Image

    from groundcap import params
    from groundcap.pipeline import order

    image = np.full((120, 180, 3), (30, 40, 200), np.uint8)
    image[20:60, 20:70] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    p = params.defaults()
    p["tag"] = {**p["tag"], "detectors": ["owlv2"],
                "owlv2": {"model": tiny["owlv2"], "device": "cpu", "box_threshold": 0.0, "max_detections": 2}}
    p["segment"] = {**p["segment"], "crop_tagger": "palette", "crop_prompts": True, "max_regions": 64}
    stage = order.stage("segment")
    stage.setup(params.subset(p, (*stage.param_keys, "executor")))
    row = stage.process({"image_id": "x", "bytes": buffer.getvalue(), "given": None},
                        {"image_id": "x", "tags": [{"label": "blue", "score": 0.9, "source": "palette"}],
                         "detections": []})
    prompted = [r for r in row["regions"] if not r["source"].startswith("felzenszwalb")]  # grabcut's (or its box)
    assert prompted and {r["label"] for r in prompted} == {"red"}
    assert "owlv2" in [s["backend"] for s in row["provenance"]]
