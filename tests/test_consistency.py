"""Cross-model consistency: the second embedded captioner, the real MiniLM similarity, decisions that
can fail, and the crosscheck stage over the real upstream stages."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import skimage.data

from conftest import SMALL_PHOTOS, small_params
from groundcap import colors
from groundcap.annotators import registry
from groundcap.annotators.backends import hsv_sketch
from groundcap.annotators.backends.attributes import AttributeCaptioner
from groundcap.pipeline.runner import run_all
from groundcap.pipeline.stage import Context
from groundcap.qa import consistency
from groundcap.storage import parts
from test_annotators import rect_mask, region

MODEL_A = AttributeCaptioner.model
MODEL_B = hsv_sketch.HsvSketchCaptioner.model


# the tests using it are marked models and slow: loading MiniLM takes over 5 s
@pytest.fixture(scope="module")
def minilm() -> consistency.Embedder:
    return consistency.embedder("minilm")


# --- hsv_sketch ----------------------------------------------------------------------------------

def test_hsv_cells_name_colours_with_the_shared_colour_words():
    assert set(hsv_sketch.CELL_NAMES.flat) <= set(colors.NAMES)
    swatch = {"red": (200, 30, 35), "brown": (140, 80, 30), "beige": (225, 200, 160), "blue": (25, 35, 190),
              "pink": (255, 192, 203), "white": (240, 240, 240), "black": (20, 20, 20), "gray": (128, 128, 128)}
    for name, rgb in swatch.items():
        assert hsv_sketch.hsv_shares(np.array([rgb] * 10, np.uint8)) == [(name, 1.0)]


def test_hsv_sketch_places_a_region_by_its_box_not_its_mask_centroid():
    h, w = 90, 90
    image = np.full((h, w, 3), 240, np.uint8)
    # an L: a bar along the top and one down the left; its box centre is in the middle cell,
    # its mask centroid in the top left cell
    mask = rect_mask(h, w, 0, 10, 0, 90) | rect_mask(h, w, 0, 90, 0, 10)
    image[mask] = (200, 30, 35)
    regions = [region(0, mask, label="frame")]
    second = registry.create("region_captioner", "hsv_sketch").caption(image, regions)[0]
    first = registry.create("region_captioner", "attributes").caption(image, regions)[0]
    assert second.short == "a red frame"
    assert second.facts["position"] == "center" and "in the center" in second.detailed
    assert first.facts["position"] == "top left"


def test_hsv_sketch_captions_regions_of_real_photos():
    captioner = registry.create("region_captioner", "hsv_sketch")
    for image in (skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()):
        h, w = image.shape[:2]
        regions = [region(0, rect_mask(h, w, 0, h // 3, 0, w // 3)),
                   region(1, rect_mask(h, w, h // 3, h, w // 2, w), label="thing")]
        out = captioner.caption(image, regions)
        assert [c.region_id for c in out] == [0, 1]
        assert out == captioner.caption(image, regions)  # deterministic
        for c in out:
            assert c.short and c.detailed and {n for n, _ in c.facts["colors"]} <= set(colors.NAMES)
        assert "at the top left" in out[0].detailed and out[1].short.endswith(" thing")


# --- similarity and decisions --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.models
def test_minilm_scores_agreeing_captions_above_contradicting_ones(minilm):
    a = "a small red cat at the top left of the image"
    others = ["a little red cat in the upper left corner", "a large blue car at the bottom right"]
    sims = minilm.similarity([a, a], others)
    assert sims.shape == (2,) and sims[0] > sims[1] and sims[0] > 0.7
    assert minilm.similarity([], []).shape == (0,)
    assert minilm.provenance()["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="unknown embedder 'nope'"):
        consistency.embedder("nope")


def _decide(minilm, a: str, b: str, min_similarity=0.5, min_claim_agreement=0.5):
    agreement = consistency.compare(a, b, minilm.similarity([a], [b])[0])
    return agreement, consistency.decide(agreement, MODEL_A, MODEL_B, min_similarity, min_claim_agreement)


A = "a red cat. A small red cat at the top left of the image, covering 3% of it. Mostly red (80%)."


@pytest.mark.slow
@pytest.mark.models
def test_agreeing_captions_pass(minilm):
    b = "a red cat. A small red cat at the top left, its box spanning 5% of the image. It is mostly red."
    agreement, decision = _decide(minilm, A, b)
    assert decision["passed"] and decision["reason"].startswith("agree (similarity ")
    assert agreement["claim_agreement"] == 1.0 and agreement["disagreements"] == []
    assert (decision["model_a"], decision["model_b"]) == (MODEL_A, MODEL_B)
    assert decision["score"] == pytest.approx((agreement["similarity"] + 1.0) / 2, abs=1e-4)


@pytest.mark.slow
@pytest.mark.models
def test_a_planted_other_colour_fails_and_says_so(minilm):
    b = "a blue cat. A small blue cat at the top left, its box spanning 5% of the image. It is mostly blue."
    agreement, decision = _decide(minilm, A, b, min_claim_agreement=1.0)
    assert agreement["claim_agreement"] < 1.0
    assert not decision["passed"] and "claims agree" in decision["reason"]
    assert "blue" in decision["reason"] and "red" in decision["reason"]


@pytest.mark.slow
@pytest.mark.models
def test_a_planted_other_side_fails_and_says_so(minilm):
    b = "a red cat. A small red cat at the bottom right, its box spanning 5% of the image. It is mostly red."
    agreement, decision = _decide(minilm, A, b, min_claim_agreement=1.0)
    assert not decision["passed"] and "bottom right" in decision["reason"]


@pytest.mark.slow
@pytest.mark.models
def test_unrelated_captions_fail_on_similarity(minilm):
    _, decision = _decide(minilm, A, "A scanned page of printed text with two columns.", min_similarity=0.5)
    assert not decision["passed"] and decision["reason"].startswith("similarity 0.")


def test_a_judge_rejection_fails_the_decision_and_counts_in_the_score():
    agreement = {"similarity": 0.9, "claim_agreement": 1.0, "disagreements": [], "judge": "rejected",
                 "judge_reason": "says 'red' but red covers 0% of the region"}
    decision = consistency.decide(agreement, MODEL_A, MODEL_B, 0.5, 0.5)
    assert not decision["passed"] and decision["score"] == pytest.approx((0.9 + 1.0 + 0.0) / 3, abs=1e-4)
    assert decision["reason"] == "judge rejected: says 'red' but red covers 0% of the region"
    assert consistency.decide(None, MODEL_A, MODEL_B, 0.5, 0.5) is None


# --- the stage -----------------------------------------------------------------------------------

UPSTREAM = ("ingest", "tag", "segment", "caption_regions", "caption_scene")


@pytest.fixture(scope="module")
def upstream(small_project, tmp_path_factory):
    """The real upstream stages on four sample photos in two parts: ``small_project``'s (conftest), without its
    crosscheck, which the tests compute again."""
    root = tmp_path_factory.mktemp("crosscheck")
    for stage in UPSTREAM:
        shutil.copytree(small_project / "work" / stage, root / "work" / stage)
    return root, small_params(small_project)


def _crosscheck(upstream, **section) -> list[dict]:
    root, p = upstream
    ctx = Context(root=root, params={**p, "crosscheck": {**p["crosscheck"], **section}}, progress=False)
    run_all(ctx, ("crosscheck",))
    return [row for i in parts.list_parts(ctx.work("crosscheck")) for row in parts.read_part(ctx.work("crosscheck"), i)]


def _captions(upstream) -> dict[str, dict[int, dict]]:
    work = upstream[0] / "work" / "caption_regions"
    rows = [row for i in parts.list_parts(work) for row in parts.read_part(work, i)]
    return {row["image_id"]: {c["region_id"]: c for c in row["captions"]} for row in rows}


@pytest.mark.slow
@pytest.mark.models
def test_crosscheck_captions_every_region_again_and_compares(upstream, minilm, small_project):
    rows = _crosscheck(upstream)
    firsts = _captions(upstream)
    assert len(rows) == SMALL_PHOTOS and not any(r["error"] for r in rows)
    compared = 0
    for row in rows:
        assert (row["model_a"], row["model_b"]) == (MODEL_A, MODEL_B)
        assert [p["backend"] for p in row["provenance"]] == ["hsv_sketch", "geometry", "minilm"]
        first = firsts[row["image_id"]]
        assert [c["region_id"] for c in row["captions"]] == [r["region_id"] for r in row["regions"]] == list(first)
        for r in row["regions"]:
            a = r["agreement"]
            assert a is not None and -1.0 <= a["similarity"] <= 1.0 and a["judge"] is None
            compared += a["claim_agreement"] is not None
        assert row["scene_caption"] and row["scene"]["similarity"] > 0
    assert compared > 0
    decisions = [consistency.decide(r["agreement"], MODEL_A, MODEL_B, 0.5, 0.5) for row in rows for r in row["regions"]]
    assert any(d["passed"] for d in decisions)
    ours, theirs = upstream[0] / "work" / "crosscheck", small_project / "work" / "crosscheck"
    assert parts.list_parts(ours) == parts.list_parts(theirs)  # deterministic: small_project's run wrote the same
    assert all(parts.part_path(ours, i).read_bytes() == parts.part_path(theirs, i).read_bytes()
               for i in parts.list_parts(theirs))


@pytest.mark.slow
@pytest.mark.models
def test_crosscheck_judge_mode_runs_the_verifier_on_the_first_captions(upstream, minilm):
    rows = _crosscheck(upstream, judge="pixel_claims")
    firsts = _captions(upstream)  # caption_regions ran pixel_claims too: the judge must say the same
    for row in rows:
        assert "pixel_claims" in [p["backend"] for p in row["provenance"]]
        for r in row["regions"]:
            caption = firsts[row["image_id"]][r["region_id"]]
            assert r["agreement"]["judge"] == caption["verdict"]
            assert r["agreement"]["judge_reason"] == caption["verdict_reason"]


@pytest.mark.slow
def test_crosscheck_off_writes_empty_rows(upstream):
    rows = _crosscheck(upstream, captioner=None)
    assert len(rows) == SMALL_PHOTOS
    for row in rows:
        assert row["captions"] == row["regions"] == [] and row["scene"] is None and row["model_b"] is None
