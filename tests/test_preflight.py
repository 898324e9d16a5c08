"""Preflight: a run under the GPU profile with models not on this machine stops before its first stage,
with one message per problem and what to do; `groundcap doctor` prints the same checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from groundcap import params
from groundcap.cli.app import app
from groundcap.errors import BackendUnavailable
from groundcap.pipeline import order, preflight
from groundcap.vlm.vllm_offline import GPU_MEMORY_DEFAULT, VllmChat


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_embedded_default_passes(tmp_path):
    findings = preflight.check(params.defaults(), list(order.stages()))
    assert findings and all(f.ok for f in findings)
    assert preflight.hub_models(list(order.stages()), params.defaults()) == []


def test_the_preflight_of_stages_that_need_no_gpu_leaves_torch_unimported():
    """Every stage process runs the preflight first: asking CUDA imports torch (~2 s), for stages on the CPU too."""
    probe = ("import sys; from groundcap import params; from groundcap.pipeline import order, preflight; "
             "preflight.require(params.defaults(), list(order.stages())); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]


def test_the_gpu_profile_names_every_missing_model_and_package():
    p = params.load(params.PROFILES / "gpu.yaml")
    failed = {(f.stage, f.what): f.detail for f in preflight.check(p, list(order.stages())) if not f.ok}
    assert "groundcap models fetch" in failed[("tag", "IDEA-Research/grounding-dino-base")]
    assert ("segment", "facebook/sam-vit-huge") in failed
    assert "needs vllm" in failed[("caption_regions", "region_captioner vlm")]  # vLLM is not installed here
    assert "no CUDA device" in failed[("caption_regions", "CUDA")]
    assert preflight.hub_models(list(order.stages()), p)[:2] == ["OpenGVLab/InternVL3-8B-hf",
                                                                   "IDEA-Research/grounding-dino-base"]
    with pytest.raises(BackendUnavailable, match="preflight failed"):
        preflight.require(p, [order.stage("segment")])


def test_a_local_model_folder_passes_and_engines_that_cannot_share_the_gpu_fail(tmp_path):
    p = params.load(params.PROFILES / "gpu.yaml")
    p["executor"]["require_gpu"] = False
    (tmp_path / "vlm").mkdir()
    for name in ("vlm", "vlm_verifier"):
        p["caption_regions"][name]["model"] = str(tmp_path / "vlm")
        p["caption_regions"][name]["engine"] = "transformers"
    findings = {f.what: f for f in preflight.check(p, [order.stage("caption_regions")])}
    assert findings[str(tmp_path / "vlm")].ok and "local folder" in findings[str(tmp_path / "vlm")].detail
    assert "GPU memory" not in findings  # no vLLM engine here
    for name, share in (("vlm", 0.6), ("vlm_verifier", 0.5)):
        p["caption_regions"][name] |= {"engine": "vllm", "model": f"m/{name}",
                                        "engine_options": {"gpu_memory_utilization": share}}
    memory = next(f for f in preflight.check(p, [order.stage("caption_regions")]) if f.what == "GPU memory")
    assert not memory.ok and "1.10" in memory.detail


def test_each_worker_process_loads_its_own_engines_and_an_unset_share_is_vllms_default():
    """The GPU profile's caption_regions (0.45 + 0.4) fits in one process, not in two local workers (each loads
    both engines on the same GPU); one engine alone needs no sum, but two workers of it do. An engine whose
    options name no share counts as vLLM's default, 0.92, which the engine itself is built with."""
    p = params.load(params.PROFILES / "gpu.yaml")

    def memory(stage="caption_regions"):
        return {f.what: f for f in preflight.check(p, [order.stage(stage)])}.get("GPU memory")

    assert memory().ok and "0.85" in memory().detail
    p["executor"]["workers"] = 2
    assert not memory().ok and "1.70" in memory().detail and "each of 2 worker processes" in memory().detail
    assert "executor.workers" in memory().detail
    p["executor"]["kind"] = "ray"  # an actor per GPU share: Ray places them
    assert memory().ok
    p["executor"] |= {"kind": "local", "workers": 1}
    assert memory("crosscheck") is None  # one engine in one process
    p["executor"]["workers"] = 2
    assert not memory("crosscheck").ok and "1.70" in memory("crosscheck").detail
    p["executor"]["workers"] = 1
    del p["caption_regions"]["vlm_verifier"]["engine_options"]["gpu_memory_utilization"]
    assert not memory().ok and "1.37" in memory().detail and "Qwen/Qwen2.5-VL-7B-Instruct: 0.92" in memory().detail
    assert VllmChat("m").llm_kwargs["gpu_memory_utilization"] == GPU_MEMORY_DEFAULT == 0.92


def test_run_under_the_gpu_profile_stops_before_ingest(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("profile: gpu\n")
    result = CliRunner().invoke(app, ["run", "--source", "sample:", "--workdir", str(tmp_path / "out"),
                                      "--params", str(f), "-q"])
    assert result.exit_code == 2, result.output
    assert "preflight failed" in result.output and "facebook/sam-vit-huge" in result.output
    assert not (tmp_path / "out" / "work").exists()
    doctor = CliRunner().invoke(app, ["doctor", "--profile", "gpu", "--root", str(tmp_path)])
    assert doctor.exit_code == 1 and "FAIL tag" in doctor.output
    assert CliRunner().invoke(app, ["doctor", "--root", str(tmp_path)]).exit_code == 0


FORK_PROBE = """
import importlib.abc, json, os, sys

class Watch(importlib.abc.MetaPathFinder):
    seen = []  # PYTORCH_NVML_BASED_CUDA_CHECK as torch is first imported

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not self.seen:
            self.seen.append(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"))

sys.meta_path.insert(0, Watch())
from groundcap import params
from groundcap.pipeline import order, preflight
from groundcap.errors import BackendUnavailable
from groundcap.vlm.vllm_offline import GPU_MEMORY_DEFAULT, VllmChat
from groundcap.pipeline.worker import PartWorker
from groundcap.pipeline.stage import Context
from pathlib import Path

p = params.load(params.PROFILES / "gpu.yaml")
preflight.check(p, [order.stage(name) for name in ("caption_regions", "caption_scene", "crosscheck")])

class Probe(type(order.stage("caption_regions"))):
    def setup(self, params):  # the worker's CUDA check, not the 8B model
        pass

try:
    PartWorker(Context(Path(sys.argv[1]), p), Probe())
    worker = "started"
except BackendUnavailable as exc:
    worker = str(exc)
import torch

forked = None
if torch.cuda.is_available():  # on a GPU node: a forked child still initialises CUDA, as vLLM's engine core must
    pid = os.fork()
    if pid == 0:
        try:
            torch.cuda.init()
        finally:
            os._exit(0 if torch.cuda.is_initialized() else 1)
    forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps({"at_torch_import": Watch.seen, "nvml": torch.cuda._nvml_based_avail(),
                  "initialized": torch.cuda.is_initialized(), "worker": worker, "forked": forked}))
"""


@pytest.mark.slow
def test_the_cuda_checks_leave_cuda_uninitialised_so_vllm_can_fork(tmp_path):
    """A fresh process (a DVC stage, a spawned worker, a Ray actor: groundcap is its first import) runs the
    preflight and the worker's CUDA check of the GPU profile's VLM stages, which import torch before vLLM is
    imported. PYTORCH_NVML_BASED_CUDA_CHECK is set before torch is, so torch asks NVML, CUDA stays
    uninitialised, and vLLM may fork its engine core (on a GPU node the forked child initialises CUDA)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    done = subprocess.run([sys.executable, "-c", FORK_PROBE, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["at_torch_import"] == ["1"] and found["nvml"] is True
    assert found["initialized"] is False
    assert found["forked"] in (None, 0)
    assert found["worker"] == "started" or "no CUDA device is visible" in found["worker"]


def test_the_gpu_profile_tags_crop_tags_and_captions_on_one_engine():
    """The tag stage's VLM tagger, segment's crop tagger and the region and scene captioners name one engine
    key, so each stage keeps the engine for the next (``Stage.reuses``): one 8B VLM loaded from tag to
    caption_scene, not one per stage."""
    p = params.load(params.PROFILES / "gpu.yaml")
    reused = {name: order.stage(name).reuses(params.subset(p, (*order.stage(name).param_keys, "executor")))
              for name in ("segment", "caption_regions", "caption_scene")}
    tag = order.stage("tag")
    [engine] = tag.reuses(params.subset(p, (*tag.param_keys, "executor")))
    assert "InternVL3-8B-hf" in engine[1] and all(engine in keys for keys in reused.values())
