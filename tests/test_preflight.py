"""Preflight: a run under the GPU profile with models not on this machine stops before its first stage,
with one message per problem and what to do; `groundcap doctor` prints the same checks."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from groundcap import params
from groundcap.cli.app import app
from groundcap.errors import BackendUnavailable
from groundcap.pipeline import order, preflight


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_embedded_default_passes(tmp_path):
    findings = preflight.check(params.defaults(), list(order.stages()))
    assert findings and all(f.ok for f in findings)
    assert preflight.hub_models(list(order.stages()), params.defaults()) == []


def test_the_gpu_profile_names_every_missing_model_and_package():
    p = params.load(params.PROFILES / "gpu.yaml")
    failed = {(f.stage, f.what): f.detail for f in preflight.check(p, list(order.stages())) if not f.ok}
    assert "groundcap models fetch" in failed[("tag", "IDEA-Research/grounding-dino-base")]
    assert ("segment", "facebook/sam-vit-huge") in failed
    assert "needs vllm" in failed[("caption_regions", "region_captioner vlm")]  # vLLM is not installed here
    assert "no CUDA device" in failed[("caption_regions", "CUDA")]
    assert preflight.hub_models(list(order.stages()), p)[:2] == ["openai/clip-vit-large-patch14",
                                                                   "IDEA-Research/grounding-dino-base"]
    with pytest.raises(BackendUnavailable, match="preflight failed"):
        preflight.require(p, [order.stage("segment")])


def test_a_local_model_folder_passes_and_engines_that_cannot_share_the_gpu_fail(tmp_path):
    p = params.load(params.PROFILES / "gpu.yaml")
    p["engine"]["require_gpu"] = False
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
