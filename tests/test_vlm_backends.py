"""The VLM annotation backends (region captioner, verifier, scene composer) against a loopback
OpenAI-compatible server whose replies are computed from the prompt each request carries."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

import cv2
import numpy as np
import polars as pl
import pytest
import skimage.data
import yaml
from PIL import Image
from typer.testing import CliRunner

from fake_openai import FakeOpenAI, completion, images, user_text
from groundcap import grounding, models, prompts
from groundcap.annotators import divide, registry
from groundcap.annotators.backends.vlm import text_schema
from groundcap.annotators.base import RegionCaption, Verdict, crop
from groundcap.cli.app import app
from test_annotators import rect_mask, region

H, W = 160, 240


@pytest.fixture(autouse=True)
def fresh_engines(monkeypatch):
    """Engines are cached per process by their options; every test gets its own, freed after it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    yield
    models.release()


def options(server: FakeOpenAI, *, engine_options: dict | None = None, **extra) -> dict:
    return {"engine": "openai", "model": "test-vlm",
            "engine_options": {"base_url": server.url, "backoff_s": 0.0, "max_retries": 1, **(engine_options or {})},
            **extra}


def kind(body: dict) -> str:
    """Which prompt file a request was rendered from."""
    text = user_text(body)
    if "also fits other regions" in text:
        return "refine"
    if "described part by part" in text:
        return "fuse"
    for marker, name in (('{"short"', "short"), ('{"detailed"', "detailed"), ('{"verdict"', "verify"),
                         ('{"caption"', "scene")):
        if marker in text:
            return name
    raise AssertionError(f"unknown prompt: {text[:80]!r}")


def reply(**obj) -> dict:
    return completion(json.dumps(obj))


def quoted(text: str, after: str) -> str:
    """The first double-quoted string after ``after`` in a prompt."""
    return re.search(re.escape(after) + r'\s*"([^"]*)"', text).group(1)


def listed(text: str) -> list[tuple[int, list[float], str]]:
    """The regions a scene prompt lists: (id, box, short caption)."""
    return [(int(i), json.loads(box), short)
            for i, box, short in re.findall(r"^- r(\d+) (\[[^\]]*\]): (.*)$", text, re.MULTILINE)]


def sent(server: FakeOpenAI, name: str) -> list[dict]:
    return [r.body for r in server.requests if kind(r.body) == name]


def scene_image() -> np.ndarray:
    """Blue-green gradient: nothing in it is red."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([np.full((H, W), 30), 60 + xx * 150 // W, 90 + yy * 150 // H], axis=-1).astype(np.uint8)


def two_regions() -> list[dict]:
    return [region(1, rect_mask(H, W, 20, 60, 30, 90), "cup"), region(2, rect_mask(H, W, 90, 150, 120, 220), "table")]


def red(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.convert("RGB")).astype(int)
    return (a[..., 0] > 190) & (a[..., 1] < 70) & (a[..., 2] < 70)


def captioner_script(body: dict, n: int) -> dict:
    text = user_text(body)
    if kind(body) == "short":
        return reply(short=f"a {quoted(text, 'called it')} thing")
    return reply(detailed=f"Details of {quoted(text, 'described as:')}.")


# --- region captioner ----------------------------------------------------------------------------

def test_captioner_gives_one_caption_per_region_in_order_from_the_replies():
    image, regions = scene_image(), two_regions()
    with FakeOpenAI(captioner_script) as server:
        captioner = registry.create("region_captioner", "vlm", options(server))
        captions = captioner.caption(image, regions)
    assert [c.region_id for c in captions] == [1, 2]
    assert [c.short for c in captions] == ["a cup thing", "a table thing"]
    assert [c.detailed for c in captions] == ["Details of a cup thing.", "Details of a table thing."]
    assert all(c.facts == {"model": "test-vlm"} for c in captions)
    assert Counter(kind(r.body) for r in server.requests) == {"short": 2, "detailed": 2}
    assert all(r.body["model"] == "test-vlm" and r.body["response_format"] == {  # the step's reply schema
        "type": "json_schema", "json_schema": {"name": "reply", "schema": text_schema(kind(r.body))}}
               for r in server.requests)


def test_a_parts_prompts_name_the_entity_it_belongs_to_and_an_entitys_do_not():
    image, (cup, table) = scene_image(), two_regions()
    handle = {**region(3, rect_mask(H, W, 30, 40, 80, 90), ""), "granularity": "part", "parent_id": 1}
    with FakeOpenAI(captioner_script) as server:
        registry.create("region_captioner", "vlm", options(server)).caption(image, [cup, table, handle])
    texts = {kind(r.body) + (" part" if "a part of" in user_text(r.body) else ""): user_text(r.body)
             for r in server.requests}
    assert sorted(texts) == ["detailed", "detailed part", "short", "short part"]
    assert 'This region is a part of the "cup": say whose part it is' in texts["short part"]
    assert 'This region is a part of the "cup"' in texts["detailed part"]
    with FakeOpenAI(captioner_script) as server, pytest.raises(ValueError, match="part of region 1, which is not"):
        registry.create("region_captioner", "vlm", options(server)).caption(image, [table, handle])


def test_short_request_carries_the_padded_crop_and_detailed_the_outlined_image():
    image, regions = scene_image(), two_regions()
    with FakeOpenAI(captioner_script) as server:
        registry.create("region_captioner", "vlm", options(server, crop_pad=0.25)).caption(image, regions)
    for body in sent(server, "short"):
        r = regions[0] if '"cup"' in user_text(body) else regions[1]
        [img] = images(body)
        expected = crop(image, tuple(r["bbox"]), 0.25)
        assert img.size == (expected.shape[1], expected.shape[0])
        assert img.size != (r["bbox"][2], r["bbox"][3])  # padded, not the bare box
        assert not red(img).any()
    for body in sent(server, "detailed"):
        r = regions[0] if "a cup thing" in user_text(body) else regions[1]
        [img] = images(body)
        assert img.size == (W, H)
        ys, xs = np.nonzero(red(img))
        assert len(xs) > 50  # the outline was drawn ...
        x, y, w, h = r["bbox"]  # ... around this region's mask, not the other one
        assert x - 6 <= xs.min() and xs.max() <= x + w + 6 and y - 6 <= ys.min() and ys.max() <= y + h + 6
    assert not red(Image.fromarray(image)).any()


def test_detailed_image_is_downscaled_to_max_image_side():
    image, regions = scene_image(), two_regions()
    with FakeOpenAI(captioner_script) as server:
        captioner = registry.create("region_captioner", "vlm",
                                    options(server, engine_options={"max_image_side": 120}, highlight="box"))
        captioner.caption(image, regions)
    for body in sent(server, "detailed"):
        [img] = images(body)
        assert img.size == (120, 80)
        a = np.asarray(img).astype(int)  # the 2-pixel outline drawn at 120 px, JPEG'd: reddish rather than red
        assert ((a[..., 0] > 140) & (a[..., 0] - np.maximum(a[..., 1], a[..., 2]) > 90)).any()


def test_malformed_reply_is_retried_and_a_hopeless_one_becomes_a_recorded_error():
    seen: Counter = Counter()
    lock = threading.Lock()

    def script(body, n):
        text = user_text(body)
        if kind(body) == "short":
            label = quoted(text, "called it")
            with lock:
                seen[label] += 1
                count = seen[label]
            if label == "table" and count == 1:
                return completion("Sure! Here is the caption you asked for.")
            if label == "chair":
                return completion("I cannot tell what this is")
            return reply(short=f"a {label} thing")
        return reply(detailed=f"Details of {quoted(text, 'described as:')}.")

    image = scene_image()
    regions = [*two_regions(), region(3, rect_mask(H, W, 100, 140, 10, 60), "chair")]
    with FakeOpenAI(script) as server:
        captions = registry.create("region_captioner", "vlm", options(server)).caption(image, regions)
    assert [c.region_id for c in captions] == [1, 2, 3]
    assert captions[1].short == "a table thing" and captions[1].detailed == "Details of a table thing."
    assert "error" not in captions[1].facts
    tables = [b for b in sent(server, "short") if '"table"' in user_text(b)]
    assert len(tables) == 2 and tables[1]["temperature"] > tables[0]["temperature"]  # re-asked, hotter
    assert captions[0].short == "a cup thing"
    assert len([b for b in sent(server, "short") if '"cup"' in user_text(b)]) == 1
    chair = captions[2]
    assert chair.short == "" and chair.detailed == ""
    assert "after 3 attempts" in chair.facts["error"] and "no JSON" in chair.facts["error"]
    assert seen["chair"] == 3
    assert len(sent(server, "detailed")) == 2  # nothing to detail for the chair


def test_refine_reasks_clashing_regions_with_the_others_captions():
    image = scene_image()
    regions = [*two_regions(), region(3, rect_mask(H, W, 100, 140, 10, 60), "chair")]
    captions = [RegionCaption(1, "a red cup", "old one", {"model": "x"}),
                RegionCaption(2, "the red cup", "old two", {"model": "x"}),
                RegionCaption(3, "a wooden chair", "old three", {"model": "x"})]

    def script(body, n):
        text = user_text(body)
        if kind(body) == "refine":
            return reply(short=f"{quoted(text, 'was described as')} on the left")
        return reply(detailed=f"Details of {quoted(text, 'described as:')}.")

    with FakeOpenAI(script) as server:
        captioner = registry.create("region_captioner", "vlm", options(server))
        out = captioner.refine(image, regions, captions, {1: [2], 2: [1]})
    refines = {quoted(user_text(b), "was described as"): user_text(b) for b in sent(server, "refine")}
    assert set(refines) == {"a red cup", "the red cup"}
    assert 'described as: "the red cup"' in refines["a red cup"]
    assert 'described as: "a red cup"' in refines["the red cup"]
    assert "wooden chair" not in "".join(refines.values())
    assert [c.region_id for c in out] == [1, 2, 3]
    assert out[0].short == "a red cup on the left" and out[0].detailed == "Details of a red cup on the left."
    assert out[1].short == "the red cup on the left"
    assert out[2] is captions[2]
    assert Counter(kind(r.body) for r in server.requests) == {"refine": 2, "detailed": 2}
    assert all(red(images(b)[0]).any() for b in sent(server, "refine"))  # the region is outlined


# --- verifier ------------------------------------------------------------------------------------

def test_verifier_turns_replies_into_verdicts_and_a_missing_verdict_into_a_rejection():
    maybe_once: list[int] = []

    def script(body, n):
        detailed = quoted(user_text(body), "was captioned:")
        if detailed.startswith("GOOD"):
            return reply(verdict="accept", reason="matches the region")
        if detailed.startswith("BAD"):
            return reply(verdict="Reject", reason="  the colour is wrong ")
        if detailed.startswith("LATE") and not maybe_once:
            maybe_once.append(n)
            return reply(verdict="maybe", reason="unsure")
        if detailed.startswith("LATE"):
            return reply(verdict="accept", reason="fine after all")
        return reply(verdict="maybe", reason="unsure")

    image = scene_image()
    regions = [*two_regions(), region(3, rect_mask(H, W, 100, 140, 10, 60)), region(4, rect_mask(H, W, 5, 15, 5, 15))]
    captions = [RegionCaption(1, "s", "GOOD a cup"), RegionCaption(2, "s", "BAD a table"),
                RegionCaption(3, "s", "UNSURE a chair"), RegionCaption(4, "s", "LATE a dot")]
    with FakeOpenAI(script) as server:
        verifier = registry.create("verifier", "vlm_verifier", options(server, max_attempts=2))
        verdicts = verifier.verify(image, regions, captions)
    assert verdicts[:2] == [Verdict(1, True, "matches the region"), Verdict(2, False, "the colour is wrong")]
    assert verdicts[3] == Verdict(4, True, "fine after all")
    unsure = verdicts[2]
    assert unsure.region_id == 3 and unsure.accepted is False
    assert unsure.reason.startswith("verifier gave no verdict") and "after 2 attempts" in unsure.reason
    assert "'maybe'" in unsure.reason
    asked = Counter(quoted(user_text(r.body), "was captioned:").split()[0] for r in server.requests)
    assert asked == {"GOOD": 1, "BAD": 1, "UNSURE": 2, "LATE": 2}
    assert all(len(images(r.body)) == 1 and red(images(r.body)[0]).any() for r in server.requests)


# --- scene composer ------------------------------------------------------------------------------

def wrap_listed(body: dict) -> str:
    """A scene caption naming every listed region once, with its short caption."""
    return " and ".join(f"<r{i}>{short}</r{i}>" for i, _, short in listed(user_text(body))) + " in a quiet room."


def scene_captions(regions: list[dict]) -> list[RegionCaption]:
    return [RegionCaption(r["region_id"], f"object {r['region_id']}", "d") for r in regions]


def test_composer_single_request_returns_the_grounded_text_as_is():
    image = scene_image()
    regions = [*two_regions(), region(3, rect_mask(H, W, 100, 140, 10, 60), "chair")]
    with FakeOpenAI(lambda body, n: reply(caption=wrap_listed(body))) as server:
        composer = registry.create("scene_captioner", "vlm", options(server))
        scene = composer.compose(image, regions, scene_captions(regions))
    [body] = [r.body for r in server.requests]
    text = user_text(body)
    assert "(the whole photo)" in text
    assert listed(text) == [(1, [0.125, 0.125, 0.375, 0.375], "object 1"), (2, [0.5, 0.562, 0.917, 0.938], "object 2"),
                            (3, [0.042, 0.625, 0.25, 0.875], "object 3")]
    assert images(body)[0].size == (W, H)
    assert scene.text == "<r1>object 1</r1> and <r2>object 2</r2> and <r3>object 3</r3> in a quiet room."
    assert grounding.is_well_formed(scene.text)
    assert {i for i, _ in grounding.references(scene.text)} == {1, 2, 3}


def test_composer_leaves_out_regions_without_a_short_caption_and_unwraps_unknown_ids():
    image, regions = scene_image(), two_regions()
    captions = [RegionCaption(1, "", "", {"error": "no JSON"}), RegionCaption(2, "a table", "d")]
    def script(body, n):  # r99 was never listed, r1 was left out for want of a short caption
        return reply(caption=wrap_listed(body) + " Also <r99>a ghost</r99> and <r1>x</r1>.")

    with FakeOpenAI(script) as server:
        scene = registry.create("scene_captioner", "vlm", options(server)).compose(image, regions, captions)
    [body] = [r.body for r in server.requests]
    assert [i for i, _, _ in listed(user_text(body))] == [2]
    assert scene.text == "<r2>a table</r2> in a quiet room. Also a ghost and x."


def test_composer_retries_malformed_tags_then_gives_up_with_an_error():
    image, regions = scene_image(), two_regions()

    def once(body, n):
        return reply(caption="<r1>an unclosed cup" if n == 0 else wrap_listed(body))

    with FakeOpenAI(once) as server:
        composer = registry.create("scene_captioner", "vlm", options(server))
        scene = composer.compose(image, regions, scene_captions(regions))
    assert len(server.requests) == 2 and scene.text.startswith("<r1>object 1</r1>")

    with FakeOpenAI(lambda body, n: reply(caption="<r1>a cup <r2>inside</r2></r1>")) as server:
        composer = registry.create("scene_captioner", "vlm", options(server, max_attempts=2))
        with pytest.raises(RuntimeError, match="scene caption rejected.*malformed region tags.*after 2 attempts"):
            composer.compose(image, regions, scene_captions(regions))
    assert len(server.requests) == 2


def test_composer_without_captioned_regions_asks_about_the_whole_photo():
    image, regions = scene_image(), two_regions()
    captions = [RegionCaption(1, "", ""), RegionCaption(2, "", "")]
    with FakeOpenAI(lambda body, n: reply(caption="An empty gradient.")) as server:
        composer = registry.create("scene_captioner", "vlm", options(server, divide_above=1))
        scene = composer.compose(image, regions, captions)
    [body] = [r.body for r in server.requests]
    assert kind(body) == "scene" and "(none)" in user_text(body) and "(the whole photo)" in user_text(body)
    assert images(body)[0].size == (W, H)
    assert scene.text == "An empty gradient."


def test_composer_divides_many_regions_into_parts_then_fuses_them():
    h, w = 300, 400
    image = np.full((h, w, 3), 100, np.uint8)
    spots = {1: (30, 70, 30, 70), 2: (230, 270, 30, 70), 3: (30, 70, 330, 370), 4: (230, 270, 330, 370),
             5: (130, 190, 280, 320)}  # top left, bottom left, top right, bottom right, centre right
    regions = [region(i, rect_mask(h, w, *s)) for i, s in spots.items()]

    def script(body, n):
        text = user_text(body)
        if kind(body) == "fuse":
            tags = re.findall(r"<r\d+>.*?</r\d+>", text)
            return reply(caption="Fused: " + ", ".join(tags) + ".")
        return reply(caption=wrap_listed(body))

    with FakeOpenAI(script) as server:
        composer = registry.create("scene_captioner", "vlm", options(server, divide_above=2))
        scene = composer.compose(image, regions, scene_captions(regions))
    parts = {re.search(r"\(the (.*?) of a larger photo\)", user_text(b)).group(1): b for b in sent(server, "scene")}
    assert set(parts) == {"left half", "top right quarter", "bottom right quarter"}
    expected = {p.name: p for p in divide.split(regions, w, h, 2)}
    for name, body in parts.items():
        x, y, pw, ph = expected[name].box
        assert images(body)[0].size == (pw, ph)
        lines = listed(user_text(body))
        assert sorted(i for i, _, _ in lines) == sorted(r["region_id"] for r in expected[name].regions)
        for i, box, _ in lines:
            bx, by, bw, bh = regions[i - 1]["bbox"]
            exact = [(bx - x) / pw, (by - y) / ph, (bx + bw - x) / pw, (by + bh - y) / ph]
            assert box == pytest.approx(np.clip(exact, 0.0, 1.0).tolist(), abs=1e-3)  # clamped to the part
    assert [i for i, _, _ in listed(user_text(parts["left half"]))] == [1, 2]
    assert listed(user_text(parts["left half"]))[0][1] == [0.15, 0.1, 0.35, 0.233]
    assert listed(user_text(parts["bottom right quarter"]))[1][:2] == (5, [0.4, 0.0, 0.6, 0.267])  # crosses the split
    [fuse] = sent(server, "fuse")
    fuse_text = user_text(fuse)
    for name in parts:
        assert f"[{name}] <r" in fuse_text
    assert images(fuse)[0].size == (w, h)
    assert {i for i, _ in grounding.references(scene.text)} == {1, 2, 3, 4, 5}
    assert scene.text.startswith("Fused: <r")


@pytest.fixture(scope="module")
def ocr():
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()


def read_marks(ocr, picture: Image.Image) -> dict[int, tuple[float, float]]:
    """The numbers written on a set-of-mark image and where (x, y of their ink's centre), read off its pixels:
    the near-white ink, its glyphs joined into numbers across gaps under half a glyph's height, each number read
    by RapidOCR's recogniser as black on white."""
    rgb = np.asarray(picture.convert("RGB"))
    ink = (rgb.min(axis=2) > 235).astype(np.uint8)
    glyph = int(np.median(cv2.connectedComponentsWithStats(ink)[2][1:, cv2.CC_STAT_HEIGHT]))
    n, labels, stats, centres = cv2.connectedComponentsWithStats(cv2.dilate(ink, np.ones((1, glyph // 2), np.uint8)))
    tiles = []
    for k in range(1, n):
        x, y, w, h, _ = stats[k]
        glyphs = (labels[y:y + h, x:x + w] == k) & (ink[y:y + h, x:x + w] > 0)
        tile = np.pad(np.where(glyphs, 0, 255).astype(np.uint8), h // 2, constant_values=255)
        tiles.append(np.repeat(tile[:, :, None], 3, 2))
    found: dict[int, tuple[float, float]] = {}
    for k, tile in enumerate(tiles, start=1):  # one at a time: a batch pads every tile to the widest, slower
        [(text, score)], _ = ocr.text_rec(tile)
        assert text.strip().isdigit() and score > 0.8, (text, score, stats[k])
        assert int(text) not in found, f"{text} written twice"
        found[int(text)] = (float(centres[k][0]), float(centres[k][1]))
    return found


def join_tags(body: dict, n: int) -> dict:
    """A part's caption names its listed regions; a fuse joins the parts' tags."""
    if kind(body) == "scene":
        return reply(caption=wrap_listed(body))
    return reply(caption=" ".join(re.findall(r"<r\d+>.*?</r\d+>", user_text(body))))


def test_composer_sees_every_region_numbered_where_it_is_with_its_detailed_caption(ocr):
    """The set-of-mark image each request carries, decoded from the request: every listed id is written
    inside its region's box (on the part, at the size the engine sends), whatever the photo's size."""
    # a small photo sent as is, divided into parts; a large one downscaled 4x by the engine, whole
    for h, w, side, divide_above in ((300, 400, 1024, 2), (1200, 1600, 400, 0)):
        image = np.full((h, w, 3), 90, np.uint8)
        image[:, w // 2:] = (225, 225, 200)  # dark and light backgrounds
        f = h / 300
        spots = {3: (20, 120, 20, 160), 17: (150, 290, 30, 120), 42: (40, 100, 250, 390), 8: (200, 230, 300, 330),
                 25: (240, 290, 200, 390)}
        regions = [region(i, rect_mask(h, w, *(round(v * f) for v in s))) for i, s in spots.items()]
        captions = [RegionCaption(i, f"object {i}", f"A detailed look at\nobject {i}.") for i in spots]
        with FakeOpenAI(join_tags) as server:
            composer = registry.create("scene_captioner", "vlm", options(
                server, divide_above=divide_above, engine_options={"max_image_side": side, "image_format": "png"}))
            scene = composer.compose(image, regions, captions)
        assert {i for i, _ in grounding.references(scene.text)} == set(spots)
        parts = {p.name: p for p in divide.split(regions, w, h, divide_above or len(regions))}
        assert len(sent(server, "scene")) == len(parts) == (3 if divide_above else 1)
        for body in sent(server, "scene"):
            text = user_text(body)
            name = re.search(r"\(the (.*?)(?: of a larger photo)?\)", text).group(1)
            x, y, pw, ph = parts["whole image" if name == "whole photo" else name].box
            [picture] = images(body)
            scale = picture.size[0] / pw
            assert max(picture.size) <= side
            read = read_marks(ocr, picture)
            assert set(read) == {i for i, _, _ in listed(text)}
            for i, (cx, cy) in read.items():
                bx, by, bw, bh = regions[list(spots).index(i)]["bbox"]
                assert (bx - x) * scale <= cx <= (bx + bw - x) * scale, (i, cx)
                assert (by - y) * scale <= cy <= (by + bh - y) * scale, (i, cy)
                assert f"- r{i} " in text and f"\n  detail: A detailed look at object {i}." in text
        for body in sent(server, "fuse"):  # the fuse sees the whole photo with every region numbered
            assert set(read_marks(ocr, images(body)[0])) == set(spots)


def test_fuse_that_drops_a_reference_is_asked_again_then_rejected():
    h, w = 300, 400
    image = np.full((h, w, 3), 100, np.uint8)
    regions = [region(i, rect_mask(h, w, *s)) for i, s in
               {1: (30, 70, 30, 70), 2: (30, 70, 330, 370), 3: (230, 270, 30, 70)}.items()]

    def script(body, n):
        tags = re.findall(r"<r\d+>.*?</r\d+>", user_text(body))
        if kind(body) != "fuse":
            return reply(caption=wrap_listed(body))
        return reply(caption=" ".join(tags[:-1] if n == 3 else tags))  # the first fuse loses a region

    with FakeOpenAI(script) as server:
        scene = registry.create("scene_captioner", "vlm", options(server, divide_above=1)).compose(
            image, regions, scene_captions(regions))
    assert len(sent(server, "fuse")) == 2 and {i for i, _ in grounding.references(scene.text)} == {1, 2, 3}
    with FakeOpenAI(lambda body, n: reply(caption="<r1>object 1</r1>" if kind(body) == "fuse" else
                                          wrap_listed(body))) as server:
        composer = registry.create("scene_captioner", "vlm", options(server, divide_above=1, max_attempts=2))
        with pytest.raises(RuntimeError, match=r"fusing 3 parts: .*dropped <r2>, <r3>"):
            composer.compose(image, regions, scene_captions(regions))


# --- provenance ----------------------------------------------------------------------------------

@pytest.mark.parametrize("step,name,prompt", [("region_captioner", "vlm", "region_detailed"),
                                              ("verifier", "vlm_verifier", "verify_region"),
                                              ("scene_captioner", "vlm", "scene_fuse")])
def test_provenance_names_model_and_engine_and_hashes_the_prompts(tmp_path, step, name, prompt):
    opts = {"engine": "openai", "model": "test-vlm", "engine_options": {"base_url": "http://127.0.0.1:9/v1"}}
    prov = registry.create(step, name, opts).provenance()
    assert prov["backend"] == name and "test-vlm" in prov["model"] and "openai" in prov["model"]
    assert re.fullmatch(r"[0-9a-f]{16}", prov["prompt_hash"])
    assert registry.create(step, name, opts).provenance() == prov  # stable

    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / f"{prompt}.txt").write_text(prompts.load(prompt).text + "\nBe brief.\n", encoding="utf-8")
    changed = registry.create(step, name, {**opts, "prompts_dir": str(edited)}).provenance()
    assert re.fullmatch(r"[0-9a-f]{16}", changed["prompt_hash"]) and changed["prompt_hash"] != prov["prompt_hash"]

    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "vocabulary.txt").write_text("cat\n", encoding="utf-8")
    assert registry.create(step, name, {**opts, "prompts_dir": str(unrelated)}).provenance() == prov


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="no option base_url"):
        registry.create("region_captioner", "vlm", {"engine": "openai", "base_url": "http://127.0.0.1:9/v1"})


# --- end to end ----------------------------------------------------------------------------------

def pipeline_script(body: dict, n: int) -> dict:
    text = user_text(body)
    what = kind(body)
    if what in ("short", "refine"):
        return reply(short=f"thing number {n}")
    if what == "detailed":
        return reply(detailed=f"A close look at {quoted(text, 'described as:')}.")
    if what == "verify":
        return reply(verdict="accept", reason="looks right")
    if what == "fuse":
        return reply(caption=" ".join(re.findall(r"<r\d+>.*?</r\d+>", text)[:1]) + " fused.")
    first = listed(text)[0]
    return reply(caption=f"A photo with <r{first[0]}>{first[2]}</r{first[0]}> in it.")


@pytest.mark.slow
def test_groundcap_run_with_vlm_backends_against_the_fake_server(tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    for photo in ("chelsea", "coffee"):
        Image.fromarray(getattr(skimage.data, photo)()).save(source / f"{photo}.png")
    work = tmp_path / "w"
    with FakeOpenAI(pipeline_script) as server:
        vlm = options(server)
        params = {"caption_regions": {"captioner": "vlm", "verifier": "vlm_verifier", "unique_rounds": 1,
                                      "vlm": vlm, "vlm_verifier": {**vlm, "model": "test-verifier"}},
                  "caption_scene": {"composer": "vlm", "vlm": vlm},
                  # the fake VLM's "thing number N" shares nothing with the measured second opinion: flag, not fail;
                  # and every "thing number N" means the same to a reader (annotators.uniqueness): not required
                  "qa": {"consistency": {"action": "flag"}, "require_unique_captions": False}}
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(params), encoding="utf-8")
        result = CliRunner().invoke(app, ["run", "--source", str(source), "--workdir", str(work),
                                          "--params", str(params_file), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (work / "release" / "README.md").is_file() and list((work / "release" / "data").glob("*.parquet"))
    qa = pl.read_parquet(work / "work/qa/*.parquet")
    assert qa["passed"].to_list() == [True, True]  # both photos released
    regions = [r for per_image in qa["regions"] for r in per_image]
    flagged = [r for r in regions if "flagged: models disagree on the caption" in r["reasons"]]
    assert flagged and all(r["passed"] and r["consistency"]["model_a"] == "test-vlm (openai)" for r in flagged)

    assert sent(server, "refine")  # look-alike captions were re-asked (one round)
    short_replies = {f"thing number {i}" for i, r in enumerate(server.requests) if kind(r.body) in ("short", "refine")}
    captions = pl.read_parquet(work / "work/caption_regions/*.parquet")
    assert captions.height == 2 and captions["error"].is_null().all()
    rows = [c for per_image in captions["captions"] for c in per_image]
    assert rows and {c["short"] for c in rows} <= short_replies
    assert all(c["detailed"] == f"A close look at {c['short']}." for c in rows)
    assert {c["verdict"] for c in rows} == {"accepted"} and {c["verdict_reason"] for c in rows} == {"looks right"}
    stamps = captions["provenance"][0]
    assert {s["backend"] for s in stamps} == {"vlm", "vlm_verifier", "minilm"}
    assert {s["model"] for s in stamps} == {"test-vlm (openai)", "test-verifier (openai)",
                                            "sentence-transformers/all-MiniLM-L6-v2"}

    segment = pl.read_parquet(work / "work/segment/*.parquet")
    ids = {row["image_id"]: {r["region_id"] for r in row["regions"]} for row in segment.iter_rows(named=True)}
    scenes = pl.read_parquet(work / "work/caption_scene/*.parquet")
    assert scenes.height == 2 and scenes["error"].is_null().all()
    for row in scenes.iter_rows(named=True):
        refs = {i for i, _ in grounding.references(row["scene_caption"])}
        assert refs and refs <= ids[row["image_id"]], row["scene_caption"]
        assert grounding.is_well_formed(row["scene_caption"])


# --- batches -------------------------------------------------------------------------------------

def batch_script(body: dict, n: int) -> dict:
    if kind(body) in ("short", "detailed"):
        return captioner_script(body, n)
    if kind(body) == "verify":
        return reply(verdict="accept", reason="it matches")
    return reply(caption="<r1>a cup</r1> stands by <r2>a table</r2>.")


def test_a_batch_of_images_costs_one_engine_call_per_step(monkeypatch):
    """caption_batch / verify_batch / compose_batch send each step's requests of every image at once (what
    vLLM needs to fill its batches), and give exactly what one image at a time gives."""
    from groundcap.vlm.openai_api import OpenAIChat

    calls: list[int] = []
    real = OpenAIChat.generate
    monkeypatch.setattr(OpenAIChat, "generate",
                        lambda self, requests: calls.append(len(requests)) or real(self, requests))
    items = [(scene_image(), two_regions()) for _ in range(3)]
    with FakeOpenAI(batch_script) as server:
        captioner = registry.create("region_captioner", "vlm", options(server))
        batched = captioner.caption_batch(items)
        assert calls == [6, 6]  # every short caption, then every detailed caption
        calls.clear()
        assert [captioner.caption(*item) for item in items] == batched
        assert calls == [2, 2] * 3
        calls.clear()
        verifier = registry.create("verifier", "vlm_verifier", options(server))
        triples = [(image, regions, captions) for (image, regions), captions in zip(items, batched, strict=True)]
        verdicts = verifier.verify_batch(triples)
        assert calls == [6] and verdicts == [[Verdict(1, True, "it matches"), Verdict(2, True, "it matches")]] * 3
        calls.clear()
        composer = registry.create("scene_captioner", "vlm", options(server))
        scenes = composer.compose_batch(triples)
        assert calls == [3] and [s.text for s in scenes] == ["<r1>a cup</r1> stands by <r2>a table</r2>."] * 3


def test_a_scene_the_composer_rejects_costs_only_its_image():
    def script(body, n):
        if "r2" in user_text(body):
            return completion("not json at all")
        return reply(caption="<r1>a cup</r1> alone.")

    one = [region(1, rect_mask(H, W, 20, 60, 30, 90), "cup")]
    captions = [RegionCaption(1, "a cup", "A cup."), RegionCaption(2, "a table", "A table.")]
    with FakeOpenAI(script) as server:
        composer = registry.create("scene_captioner", "vlm", options(server, max_attempts=1))
        good, bad = composer.compose_batch([(scene_image(), one, captions[:1]),
                                            (scene_image(), two_regions(), captions)])
    assert good.text == "<r1>a cup</r1> alone."
    assert isinstance(bad, RuntimeError) and "scene caption rejected" in str(bad)


# --- engines that cannot start ---------------------------------------------------------------------------------

def test_a_transformers_engine_whose_model_folder_is_broken_is_fatal(tmp_path):
    """A model that does not load is an engine that cannot start: ``EngineStartFailed`` with transformers' reason
    (fatal: the worker stops the stage instead of loading it again for every image), not a per-request error."""
    pytest.importorskip("transformers")
    from groundcap.errors import EngineStartFailed, is_fatal
    from groundcap.vlm import chat as vlm_chat
    from groundcap.vlm.chat import ChatRequest

    (tmp_path / "config.json").write_text('{"model_type": "llava", "text_config": ')
    chat = vlm_chat.engine("transformers", str(tmp_path), {"device": "cpu"})
    with pytest.raises(EngineStartFailed, match=rf"transformers could not load {tmp_path}: \w+") as exc:
        chat.generate([ChatRequest("describe")])
    assert is_fatal(exc.value)


# --- outlines drawn on the downscaled image --------------------------------------------------------------------

def test_highlight_on_the_downscaled_copy_is_the_full_size_outline_downscaled():
    """A region outlined on a copy downscaled to 450 or 1024 a side looks like the full-size outline downscaled
    (every red pixel within 2 pixels of the other's, about as many, under a grey level apart on average); at
    scale 1 it is exactly OpenCV's contour / rectangle at full size, as before."""
    from groundcap.annotators.backends.vlm import highlight
    from groundcap.vlm.chat import downscale

    h, w = 1200, 1800
    image = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.ogrid[:h, :w]
    mask = ((yy - 500) / 300) ** 2 + ((xx - 700) / 450) ** 2 <= 1
    r = region(1, mask, "thing") | {"bbox": [250.4, 200.3, 900.2, 600.7]}

    def reddish(a):
        a = a.astype(int)
        return (a[..., 0] - np.maximum(a[..., 1], a[..., 2])) > 60

    def near(a, b):
        return not (a & ~cv2.dilate(b.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)).any()

    for style in ("contour", "box"):
        full = highlight(image, r, style)
        reference = image.copy()
        if style == "box":
            cv2.rectangle(reference, (250, 200), (250 + 900 - 1, 200 + 601 - 1), (255, 0, 0), 7)
        else:
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(reference, contours, -1, (255, 0, 0), 7)
        assert (full == reference).all()
        for side in (450, 1024):
            small = highlight(downscale(image, side), r, style, (h, w))
            before = downscale(full, side)
            assert small.shape == before.shape == (round(h * side / w), side, 3)
            a, b = reddish(small), reddish(before)
            assert near(a, b) and near(b, a) and 0.75 < a.sum() / b.sum() < 1.33
            assert np.abs(small.astype(int) - before).mean() < 1


def test_every_outline_is_drawn_on_one_downscaled_copy_per_image(monkeypatch):
    """The detailed captions' and the verifier's outlines are drawn on the image as the engine sends it
    (max_image_side 120), one copy per image shared by its regions, never on a full-size copy per region."""
    from groundcap.annotators.backends import vlm

    drawn = []
    real = vlm.highlight

    def recorded(view, region, style, size=None):
        drawn.append((id(view), view.shape, size))
        return real(view, region, style, size)

    monkeypatch.setattr(vlm, "highlight", recorded)

    def script(body, n):
        return reply(verdict="accept", reason="ok") if kind(body) == "verify" else captioner_script(body, n)

    items = [(scene_image(), two_regions()), (scene_image()[::-1].copy(), two_regions())]
    with FakeOpenAI(script) as server:
        opts = options(server, engine_options={"max_image_side": 120})
        captions = registry.create("region_captioner", "vlm", opts).caption_batch(items)
        registry.create("verifier", "vlm_verifier", opts).verify_batch(
            [(image, regions, c) for (image, regions), c in zip(items, captions, strict=True)])
    assert len(drawn) == 8  # 4 regions, detailed caption and verdict
    assert {shape for _, shape, _ in drawn} == {(80, 120, 3)} and {size for _, _, size in drawn} == {(H, W)}
    assert len({view for view, _, _ in drawn[:4]}) == 2  # one copy per image, per step


# --- open-vocabulary tagger (issue 25) -----------------------------------------------------------

def test_the_vlm_tagger_asks_once_per_batch_and_ranks_the_names_it_reads():
    """Three images in one batch, four crops of two images in one more: one request each, held to the tags
    schema; names casefolded, articles and blanks dropped, each once, scored by rank; crops padded."""
    from groundcap.annotators.backends.vlm_tagger import TAGS_SCHEMA

    def script(body, n):
        if "crop around one region" in user_text(body):
            [img] = images(body)
            return reply(tags=[f"thing {img.size[0]}"])
        return reply(tags=["A Dog", "the  grass", "dog", " ", "sky"])

    image = scene_image()
    with FakeOpenAI(script) as server:
        tagger = registry.create("tagger", "vlm", options(server, top_k=2))
        tags = tagger.tag_batch([image] * 3)
        crops = tagger.tag_crops_batch([(image, [(0, 0, 100, 50), (10, 10, 40, 40)]), (image, [(0, 0, 30, 30)])])
    ranked = [("dog", 1.0, "vlm"), ("grass", 0.5, "vlm")]  # top_k 2: "sky" is third
    assert [[(t.label, t.score, t.source) for t in ts] for ts in tags] == [ranked] * 3
    assert [[[t.label for t in ts] for ts in per_image] for per_image in crops] == [
        [["thing 110"], ["thing 48"]], [["thing 33"]]]  # each box grown by crop_pad 0.1, clipped at the border
    assert len(server.requests) == 6 and all(r.body["response_format"]["json_schema"]["schema"] == TAGS_SCHEMA
                                             for r in server.requests)


def test_a_vlm_tagger_reply_that_never_names_fails_with_its_reason():
    with FakeOpenAI(lambda body, n: reply(tags=["a very long sentence that is not a name at all"])) as server:
        tagger = registry.create("tagger", "vlm", options(server, max_attempts=2))
        with pytest.raises(RuntimeError, match=r"vlm tagger got no tags \(tag_image #0: .*not a name of at most 4 "
                                               r"words.* after 2 attempts"):
            tagger.tag(scene_image())
    assert len(server.requests) == 2  # re-asked once


def test_a_class_the_source_gave_names_the_region_in_both_caption_prompts():
    """DLC-SDP stage 1: a COCO region's category is its name in the short and the detailed prompt; a detector's
    label stays a hint "that may be wrong", and so does a given mask a crop tagger named (no class was given)."""
    image = scene_image()
    regions = two_regions()
    regions[0] |= {"source": "given:coco", "label": "dining table"}
    regions[1] |= {"source": "given:sa1b+vlm"}
    with FakeOpenAI(lambda body, n: reply(short="a thing") if kind(body) == "short" else reply(detailed="A thing."))\
            as server:
        registry.create("region_captioner", "vlm", options(server)).caption(image, regions)
    given = 'The dataset the photo comes from labels it "dining table": that is its class'
    short, detailed = (sorted((user_text(b) for b in sent(server, name)), key=lambda t: given not in t)
                       for name in ("short", "detailed"))  # the given class's first: requests run concurrently
    assert [given in text for text in short] == [True, False] and [given in text for text in detailed] == [True, False]
    assert 'A detector called it "table" (this may be empty or wrong).' in short[1]
    assert "may be empty or wrong" not in short[0]
