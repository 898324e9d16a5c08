"""SAM 3 (concept segmenter "sam3") on a tiny random-weight ``Sam3Model`` saved to disk; the segment stage using it.

SAM 3's image processor runs on torchvision (it has no PIL one), which the main venv lacks; ``.venv-vllm``
has it, so these run there (``make test-vllm``) and are skipped elsewhere, saying so. With
``GROUNDCAP_REQUIRE_VLLM`` set (that venv) a missing torchvision fails instead. Random weights make the
masks meaningless: the tests check the bookkeeping (phrases, order, limits, stuff, shapes) and determinism.
"""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image
from skimage import data

if os.environ.get("GROUNDCAP_REQUIRE_VLLM"):
    import torchvision  # noqa: F401 - fail loudly: this venv is meant to have it
else:
    pytest.importorskip("torchvision", reason="SAM 3's processor needs torchvision: .venv-vllm has it (make test-vllm)")

import tiny_hf
from groundcap import masks, params
from groundcap.annotators import registry
from groundcap.pipeline import order

pytestmark = [pytest.mark.models, pytest.mark.slow]
LONG = "extraordinarily long-handled wooden garden rake"  # 47 tokens in the tiny tokenizer: past the 32 it reads


@pytest.fixture(scope="module")
def sam3(tmp_path_factory) -> str:
    return tiny_hf.build_sam3(tmp_path_factory.mktemp("tiny_sam3") / "sam3")


def options(model: str, **extra) -> dict:
    return {"model": model, "device": "cpu", "threshold": 0.0, "max_instances": 3, **extra}


def test_sam3_segments_every_instance_of_each_phrase_and_one_stuff_region(sam3):
    cat = data.chelsea()[::3, ::3]  # 100 x 151
    backend = registry.create("concept_segmenter", "sam3", options(sam3))
    out = backend.segment(cat, ["cat", "sky", "cat", "", LONG])
    assert [m.label for m in out] == ["cat"] * 3 + ["sky"] + [LONG] * 3  # phrases once each, in order
    for phrase in ("cat", LONG):
        scores = [m.score for m in out if m.label == phrase]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    for m in out:
        binary = masks.decode(m.rle)
        assert binary.shape == (100, 151) and binary.any() and m.source == "sam3" and m.predicted_iou is None
        x, y, w, h = masks.bbox(m.rle)
        assert 0 <= x and 0 <= y and 0 < w and 0 < h and x + w <= 151 and y + h <= 100
        assert m.granularity == ("stuff" if m.label == "sky" else "object") and 0 <= m.stability_score <= 1
    every_sky = registry.create("concept_segmenter", "sam3", options(sam3, stuff=[], max_instances=100))
    skies = every_sky.segment(cat, ["sky"])
    assert len(skies) == 8  # the tiny model's 8 queries, each an instance when nothing marks sky as stuff
    assert masks.iou([out[3].rle], [masks.union([m.rle for m in skies])])[0, 0] == 1.0
    # one phrase a batch gives the same masks, and a second run the same records
    one_by_one = registry.create("concept_segmenter", "sam3", options(sam3, prompts_per_batch=1))
    again = one_by_one.segment(cat, ["cat", "sky", "cat", "", LONG])
    assert [(m.label, m.granularity) for m in again] == [(m.label, m.granularity) for m in out]
    for a, b in zip(out, again, strict=True):
        assert masks.iou([a.rle], [b.rle])[0, 0] > 0.999 and a.score == pytest.approx(b.score, abs=1e-5)
    assert backend.segment(cat, ["cat", "sky", "cat", "", LONG]) == out
    assert backend.segment(cat, []) == [] and backend.segment(cat, [""]) == []
    assert registry.create("concept_segmenter", "sam3", options(sam3, threshold=1.0)).segment(cat, ["cat"]) == []


def test_the_segment_stage_takes_the_tags_instances_from_sam3_in_place_of_detector_and_sam(sam3):
    p = params.defaults()
    p["tag"] = {**p["tag"], "detectors": []}
    p["segment"] = {**p["segment"], "prompted": None, "concept": "sam3", "sam3": options(sam3, max_instances=2),
                    "max_regions": 64}
    problems: list[str] = []
    stage = order.stage("segment")
    stage.check_params(p, problems)
    assert problems == []
    stage.setup(params.subset(p, (*stage.param_keys, "executor")))
    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()[::3, ::3]).save(buffer, format="PNG")
    tags = [{"label": label, "score": 0.9, "source": "clip"} for label in ("cat", "grass")]
    row = stage.process({"image_id": "x", "bytes": buffer.getvalue(), "given": None},
                        {"image_id": "x", "tags": tags, "detections": []})
    assert row["error"] is None
    assert [s["backend"] for s in row["provenance"]] == ["sam3", "felzenszwalb"]
    from_sam3 = [r for r in row["regions"] if r["source"] == "sam3"]
    assert from_sam3 and {r["label"] for r in from_sam3} <= {"cat", "grass"}
    assert all(r["granularity"] == ("stuff" if r["label"] == "grass" else "object") for r in from_sam3)
    taken = masks.union([r["segmentation"] for r in row["regions"]])
    assert masks.area(taken) == sum(r["area"] for r in row["regions"])  # entities never overlap
