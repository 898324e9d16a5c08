"""VllmChat without vLLM: the pure plumbing, and the engine driven through a fake ``vllm`` module."""

from __future__ import annotations

import base64
import io
import json
import sys
import types
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from groundcap.vlm.chat import ChatReply, ChatRequest, engine
from groundcap.vlm.vllm_offline import (
    VllmChat,
    build_conversations,
    image_caps,
    json_object_kwargs,
    max_pixels,
    max_tiles,
    parse_outputs,
    sampling_kwargs,
    stop_token_ids,
)


def output(text, finish="stop", prompt_ids=(1, 2, 3), token_ids=(4, 5)):
    """A ``vllm.RequestOutput`` look-alike."""
    return SimpleNamespace(prompt_token_ids=list(prompt_ids),
                           outputs=[SimpleNamespace(text=text, token_ids=list(token_ids), finish_reason=finish)])


def test_constructing_needs_no_vllm(monkeypatch):
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    chat = engine("vllm", "OpenGVLab/InternVL3-8B", {"max_num_seqs": 8})
    assert isinstance(chat, VllmChat) and chat.describe() == "OpenGVLab/InternVL3-8B (vllm)"
    assert "vllm" not in sys.modules


def test_generate_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail even where it is installed
    with pytest.raises(ImportError, match=r"pip install 'groundcap\[gpu\]'"):
        VllmChat("m").generate([ChatRequest(prompt="hi")])


def test_build_conversations():
    img = np.zeros((600, 2400, 3), np.uint8)
    [conv, plain] = build_conversations([ChatRequest(prompt="what?", images=(img,), system="sys"),
                                         ChatRequest(prompt="text only")], max_image_side=1200)
    assert conv[0] == {"role": "system", "content": "sys"}
    image_part, text_part = conv[1]["content"]
    assert conv[1]["role"] == "user" and text_part == {"type": "text", "text": "what?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (1200, 300)
    assert plain == [{"role": "user", "content": [{"type": "text", "text": "text only"}]}]


def test_sampling_kwargs():
    req = ChatRequest(prompt="x", max_tokens=64, temperature=0.3)
    assert sampling_kwargs(req, seed=7) == {"temperature": 0.3, "max_tokens": 64, "seed": 7}


def test_parse_outputs():
    bare = SimpleNamespace(outputs=[SimpleNamespace(text="no counts")])
    empty = SimpleNamespace(prompt_token_ids=[1], outputs=[])
    done, cut, plain, none = parse_outputs([output("a cat"), output("a lo", finish="length"), bare, empty])
    assert done == ChatReply(text="a cat", usage={"prompt_tokens": 3, "completion_tokens": 2})
    assert cut.truncated and cut.text == "a lo"
    assert plain == ChatReply(text="no counts")
    assert none.error == "vLLM returned no completion"


class FakeTokenizer:
    """The part of a Hugging Face tokenizer ``stop_token_ids`` reads."""

    eos_token_id = 3

    def get_vocab(self):
        return {"<|im_end|>": 7, "<|endoftext|>": 3, "<|im_start|>": 6, "hello": 9}


def test_stop_token_ids_are_the_turn_ends_in_the_vocabulary_and_eos():
    assert stop_token_ids(FakeTokenizer()) == [3, 6, 7]
    llama = SimpleNamespace(eos_token_id=128001, get_vocab=lambda: {"<|eot_id|>": 128009, "<|end|>": 5})
    assert stop_token_ids(llama) == [5, 128001, 128009]
    assert stop_token_ids(SimpleNamespace(eos_token_id=None, get_vocab=dict)) == []


def test_json_object_kwargs_follow_the_installed_vllm():
    params = SimpleNamespace
    new = types.SimpleNamespace(sampling_params=SimpleNamespace(StructuredOutputsParams=params))
    old = types.SimpleNamespace(GuidedDecodingParams=params)
    [(field, value)] = json_object_kwargs(new).items()
    assert field == "structured_outputs" and value.json_object is True
    [(field, value)] = json_object_kwargs(old).items()
    assert field == "guided_decoding" and value.json_object is True
    assert json_object_kwargs(types.SimpleNamespace()) == {}  # neither: the JSON repair path alone


def test_max_pixels_rounds_the_side_up_to_the_patch_grid():
    assert max_pixels(1024) == 1036 * 1036  # 37 x 28
    assert max_pixels(224) == 224 * 224 == 28 * 28 * 64
    assert max_pixels(1024, patch_grid=32) == 1024 * 1024


def test_image_caps_from_a_local_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {"patch_size": 16, "spatial_merge_size": 2}}))
    assert image_caps(str(tmp_path), 1024) == {"max_pixels": 1024 * 1024}  # a 32-pixel grid
    assert image_caps(str(tmp_path / "missing"), 1024) == {"max_pixels": 1036 * 1036}  # Qwen's 28
    internvl = {"model_type": "internvl", "vision_config": {"patch_size": [14, 14], "image_size": [448, 448]}}
    (tmp_path / "config.json").write_text(json.dumps(internvl))
    assert image_caps(str(tmp_path), 1024) == {"max_patches": 6}  # it tiles: no max_pixels, a tile budget
    assert image_caps(str(tmp_path), 448) == {"max_patches": 1}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "vision_config": {"image_size": 336}}))
    assert image_caps(str(tmp_path), 1024) == {}  # neither: the processor's own


def test_max_tiles_hold_the_pixels_of_the_longest_side_squared():
    assert max_tiles(1024, 448 * 448) == 6  # 1024^2 / 448^2 = 5.2, rounded up
    assert max_tiles(896, 448 * 448) == 4 and max_tiles(100, 448 * 448) == 1
    assert max_tiles(224, 56 * 56) == 16


class FakeLLM:
    """Records how it was built and called; answers "<user text>|t=<temperature>"."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=lambda: None))  # what close() ends
        FakeLLM.instances.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True, chat_template_kwargs=None):
        texts = [conv[-1]["content"][-1]["text"] for conv in messages]
        self.calls.append({"texts": texts, "params": sampling_params, "use_tqdm": use_tqdm,
                           "chat_template_kwargs": chat_template_kwargs})
        if any("boom" in t for t in texts):
            raise ValueError("prompt is longer than max_model_len")
        return [output(f"{t}|t={sampling_params.temperature}") for t in texts]

    def get_tokenizer(self):
        return FakeTokenizer()


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    module.StructuredOutputsParams = lambda **kw: ("structured", kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances = []
    return module


def test_engine_groups_by_sampling_keeps_order_and_passes_options(fake_vllm):
    chat = VllmChat("OpenGVLab/InternVL3-8B", max_num_seqs=16, limit_images_per_prompt=3, seed=5,
                    chat_template_kwargs={"enable_thinking": False})
    assert FakeLLM.instances == []  # nothing loaded until the first generate
    temps = [0.0, 0.7, 0.0, 0.7, 0.0]
    replies = chat.generate([ChatRequest(prompt=f"q{i}", temperature=t) for i, t in enumerate(temps)])
    assert [r.text for r in replies] == [f"q{i}|t={t}" for i, t in enumerate(temps)]
    [llm] = FakeLLM.instances
    assert llm.kwargs == {"model": "OpenGVLab/InternVL3-8B", "tensor_parallel_size": 1,
                          "gpu_memory_utilization": 0.92, "max_model_len": 8192, "max_num_seqs": 16,
                          "limit_mm_per_prompt": {"image": 3, "video": 0}, "seed": 5, "trust_remote_code": True,
                          "dtype": "auto", "mm_processor_kwargs": {"max_pixels": 1036 * 1036}}
    assert [c["texts"] for c in llm.calls] == [["q0", "q2", "q4"], ["q1", "q3"]]
    stop = [3, 6, 7]  # FakeTokenizer's turn ends and eos
    assert [vars(c["params"]) for c in llm.calls] == [
        {"temperature": 0.0, "max_tokens": 512, "seed": 5, "stop_token_ids": stop},
        {"temperature": 0.7, "max_tokens": 512, "seed": 5, "stop_token_ids": stop}]
    assert all(c["chat_template_kwargs"] == {"enable_thinking": False} and c["use_tqdm"] is False for c in llm.calls)
    chat.generate([ChatRequest(prompt="again")])
    assert len(FakeLLM.instances) == 1  # the model is loaded once


def test_llm_options_override_and_processor_kwargs(fake_vllm):
    VllmChat("m", max_image_side=224, llm_options={"enforce_eager": True, "dtype": "float32"}).generate(
        [ChatRequest(prompt="x")])
    VllmChat("m", mm_processor_kwargs={}, stop_tokens=False).generate([ChatRequest(prompt="x")])
    VllmChat("m", mm_processor_kwargs={"max_pixels": 99, "min_pixels": 9}).generate([ChatRequest(prompt="x")])
    first, second, third = FakeLLM.instances
    assert first.kwargs["enforce_eager"] is True and first.kwargs["dtype"] == "float32"
    assert first.kwargs["mm_processor_kwargs"] == {"max_pixels": 224 * 224}
    assert "mm_processor_kwargs" not in second.kwargs and "stop_token_ids" not in vars(second.calls[0]["params"])
    assert third.kwargs["mm_processor_kwargs"] == {"max_pixels": 99, "min_pixels": 9}


def test_json_mode_requests_get_the_json_constraint_in_their_own_batch(fake_vllm):
    chat = VllmChat("m")
    replies = chat.generate([ChatRequest(prompt="j1", json_mode=True), ChatRequest(prompt="free"),
                             ChatRequest(prompt="j2", json_mode=True)])
    assert [r.text for r in replies] == ["j1|t=0.0", "free|t=0.0", "j2|t=0.0"]
    [llm] = FakeLLM.instances
    assert [c["texts"] for c in llm.calls] == [["j1", "j2"], ["free"]]
    assert vars(llm.calls[0]["params"])["structured_outputs"] == ("structured", {"json_object": True})
    assert "structured_outputs" not in vars(llm.calls[1]["params"])
    VllmChat("m", structured_outputs=False).generate([ChatRequest(prompt="j", json_mode=True)])
    assert "structured_outputs" not in vars(FakeLLM.instances[1].calls[0]["params"])


def test_requests_with_a_schema_are_held_to_it_one_batch_per_schema(fake_vllm):
    short = {"type": "object", "properties": {"short": {"type": "string"}}, "required": ["short"]}
    verdict = {"type": "object", "properties": {"verdict": {"enum": ["accept", "reject"]}}}
    VllmChat("m").generate([ChatRequest(prompt="s1", json_mode=True, json_schema=short),
                            ChatRequest(prompt="v", json_mode=True, json_schema=verdict),
                            ChatRequest(prompt="s2", json_mode=True, json_schema=dict(short))])
    [llm] = FakeLLM.instances
    assert [c["texts"] for c in llm.calls] == [["s1", "s2"], ["v"]]
    assert [vars(c["params"])["structured_outputs"] for c in llm.calls] == [("structured", {"json": short}),
                                                                             ("structured", {"json": verdict})]


def test_json_object_kwargs_with_a_schema():
    module = types.SimpleNamespace(StructuredOutputsParams=SimpleNamespace)
    assert vars(json_object_kwargs(module, {"type": "object"})["structured_outputs"]) == {"json": {"type": "object"}}


def test_compact_json_where_vllm_has_the_engine_setting(fake_vllm):
    from dataclasses import make_dataclass

    fake_vllm.EngineArgs = make_dataclass("EngineArgs", [("structured_outputs_config", dict)])
    VllmChat("m").generate([ChatRequest(prompt="x")])
    guidance = {"structured_outputs_config": {"backend": "guidance"}}
    VllmChat("m", llm_options=guidance).generate([ChatRequest(prompt="x")])
    VllmChat("m", structured_outputs=False).generate([ChatRequest(prompt="x")])
    first, second, third = FakeLLM.instances
    assert first.kwargs["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert second.kwargs["structured_outputs_config"] == {"backend": "guidance"}  # llm_options win
    assert "structured_outputs_config" not in third.kwargs


def test_a_failing_batch_is_split_until_the_bad_request_stands_alone(fake_vllm):
    prompts = ["a", "b", "boom", "d", "e"]
    replies = VllmChat("m").generate([ChatRequest(prompt=p) for p in prompts])
    assert [r.text for r in replies] == ["a|t=0.0", "b|t=0.0", None, "d|t=0.0", "e|t=0.0"]
    assert replies[2].error == "vLLM failed: ValueError: prompt is longer than max_model_len"


def test_chat_failing_for_everything_gives_an_error_per_request(fake_vllm, monkeypatch):
    def broken(self, messages, **kw):
        raise RuntimeError("CUDA error: device-side assert")

    monkeypatch.setattr(FakeLLM, "chat", broken)
    replies = VllmChat("m").generate([ChatRequest(prompt=p) for p in "abc"])
    assert [r.error for r in replies] == ["vLLM failed: RuntimeError: CUDA error: device-side assert"] * 3


class EngineDeadError(Exception):
    """As vLLM's own (vllm.v1.engine.exceptions): what LLM.chat raises once the engine core process is gone."""


def test_a_dead_engine_is_not_split_into_per_request_errors(fake_vllm, monkeypatch):
    def dead(self, messages, **kw):
        raise EngineDeadError("EngineCore encountered an issue")

    monkeypatch.setattr(FakeLLM, "chat", dead)
    with pytest.raises(EngineDeadError):
        VllmChat("m").generate([ChatRequest(prompt=p) for p in "abc"])


def test_a_dead_engine_stops_the_stage_and_keeps_the_finished_parts(fake_vllm, monkeypatch, small_project, tmp_path):
    """The first part is captioned, then the engine dies: the stage stops with one clear error (not an error
    row per image), part 0 and its marker stay, and the re-run computes only what is missing. The regions to
    caption are ``small_project``'s (conftest: four photos in two parts)."""
    import shutil

    from conftest import small_params
    from groundcap.errors import EngineDead
    from groundcap.pipeline import order, runner
    from groundcap.pipeline.stage import Context
    from groundcap.storage import parts

    for stage in ("ingest", "tag", "segment"):
        shutil.copytree(small_project / "work" / stage, tmp_path / "work" / stage)
    p = small_params(small_project)
    p["caption_regions"] |= {"captioner": "vlm", "verifier": None, "unique_rounds": 0,
                             "vlm": {"engine": "vllm", "model": "m", "max_attempts": 1}}
    ctx = Context(tmp_path, p, progress=False)
    calls = {"n": 0}

    def dies_on_the_second_part(self, messages, **kw):
        calls["n"] += 1
        if calls["n"] > 2:  # part 0 took two calls (short, then detailed captions)
            raise EngineDeadError("EngineCore encountered an issue")
        return [output(json.dumps({"short": "a thing", "detailed": "A thing."})) for _ in messages]

    monkeypatch.setattr(FakeLLM, "chat", dies_on_the_second_part)
    with pytest.raises(EngineDead, match="caption_regions: the model engine died"):
        runner.run_stage(ctx, order.stage("caption_regions"))
    out = tmp_path / "work" / "caption_regions"
    assert parts.list_parts(out) == [0]
    assert all(r["error"] is None and r["captions"] for r in parts.read_part(out, 0) if r["captions"])
    monkeypatch.setattr(FakeLLM, "chat", lambda self, messages, **kw: [
        output(json.dumps({"short": "a thing", "detailed": "A thing."})) for _ in messages])
    before = parts.marker_path(out, 0).stat().st_mtime_ns
    report = runner.run_stage(ctx, order.stage("caption_regions"))
    assert (report.parts, report.computed) == (2, 1) and parts.marker_path(out, 0).stat().st_mtime_ns == before


# --- an engine that fails to start ----------------------------------------------------------------------------

def test_an_engine_that_fails_to_start_raises_a_fatal_error_with_its_reason(fake_vllm, monkeypatch):
    """vLLM reports a failed start as RuntimeError (engine core) or ValueError (free memory): the engine raises
    ``EngineStartFailed`` with that reason, fatal, from ``generate``, not an error per request."""
    from groundcap.errors import EngineStartFailed, is_fatal

    def refuses(self, **kwargs):
        FakeLLM.instances.append(self)
        raise ValueError("Free memory on device (10.2/79.1 GiB) on startup is less than desired GPU memory "
                         "utilization (0.9, 71.2 GiB)")

    monkeypatch.setattr(FakeLLM, "__init__", refuses)
    with pytest.raises(EngineStartFailed, match=r"vLLM could not start m: ValueError: Free memory on device") as exc:
        VllmChat("m").generate([ChatRequest(prompt=p) for p in "ab"])
    assert is_fatal(exc.value) and len(FakeLLM.instances) == 1


def test_an_engine_that_fails_to_start_stops_the_stage_once_and_keeps_the_finished_parts(
        fake_vllm, monkeypatch, small_project, tmp_path):
    """``small_project``'s 4 photos in parts of 2, captioned; part 1 is lost, and on the re-run the engine cannot
    start: the stage stops with the engine's reason after one start (not one per image of part 1, as when the
    batch is redone image by image), and part 0 stays as it was."""
    import shutil

    from conftest import small_params
    from groundcap.errors import EngineDead
    from groundcap.pipeline import order, runner
    from groundcap.pipeline.stage import Context
    from groundcap.storage import parts

    for stage in ("ingest", "tag", "segment"):
        shutil.copytree(small_project / "work" / stage, tmp_path / "project" / "work" / stage)
    p = small_params(small_project)
    p["caption_regions"] |= {"captioner": "vlm", "verifier": None, "unique_rounds": 0,
                             "vlm": {"engine": "vllm", "model": "m", "max_attempts": 1}}
    ctx = Context(tmp_path / "project", p, progress=False)
    monkeypatch.setattr(FakeLLM, "chat", lambda self, messages, **kw: [
        output(json.dumps({"short": "a thing", "detailed": "A thing."})) for _ in messages])
    runner.run_stage(ctx, order.stage("caption_regions"))
    out = tmp_path / "project" / "work" / "caption_regions"
    parts.marker_path(out, 1).unlink()
    parts.part_path(out, 1).unlink()
    before = parts.marker_path(out, 0).stat().st_mtime_ns
    FakeLLM.instances = []

    def fails(self, **kwargs):
        FakeLLM.instances.append(self)
        raise RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")

    monkeypatch.setattr(FakeLLM, "__init__", fails)
    with pytest.raises(EngineDead, match=r"caption_regions: the model engine failed to start .*vLLM could not start "
                                         r"m: RuntimeError: Engine core initialization failed"):
        runner.run_stage(ctx, order.stage("caption_regions"))
    assert len(FakeLLM.instances) == 1
    assert parts.list_parts(out) == [0] and parts.marker_path(out, 0).stat().st_mtime_ns == before


# --- bounded engine calls --------------------------------------------------------------------------------------

def test_no_llm_chat_call_holds_more_than_max_requests_per_call(fake_vllm):
    """vLLM renders and processes every prompt of a call before it runs any: 7 requests of one sampling group
    go in calls of at most 3 (one group of 2 in one), and the replies are those of one unbounded call, in order."""
    temps = [0.0, 0.0, 0.7, 0.0, 0.0, 0.7, 0.0, 0.0, 0.0]
    requests = [ChatRequest(prompt=f"q{i}", temperature=t) for i, t in enumerate(temps)]
    bounded = VllmChat("m", max_requests_per_call=3).generate(requests)
    unbounded = VllmChat("m", max_requests_per_call=0).generate(requests)
    assert bounded == unbounded and [r.text for r in bounded] == [f"q{i}|t={t}" for i, t in enumerate(temps)]
    first, second = FakeLLM.instances
    assert [c["texts"] for c in first.calls] == [["q0", "q1", "q3"], ["q4", "q6", "q7"], ["q8"], ["q2", "q5"]]
    assert [len(c["texts"]) for c in second.calls] == [7, 2]
    assert VllmChat("m").max_requests_per_call == 256
    with pytest.raises(ValueError, match="max_requests_per_call must be 0"):
        VllmChat("m", max_requests_per_call=-1)


def test_the_gpu_profile_hands_the_vlm_stages_bounded_batches():
    """A whole part (16 images of up to 192 regions: 128 entities, 64 parts) would be 3072 outlined images held
    at once per step; the profile hands 2 images per batch: at most 384 requests a step, within two vLLM calls
    of the default bound."""
    from groundcap import params

    p = params.load(profile="gpu")
    batch, regions = p["executor"]["batch_images"], p["segment"]["max_regions"] + p["segment"]["max_parts"]
    assert 0 < batch < p["part_size"] and batch * regions <= 2 * VllmChat("m").max_requests_per_call
