"""Executors and resume: Ray and worker processes write what the local executor writes, byte for byte;
a run killed with SIGKILL at any point and run again gives the same release; failed images are retried."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import small_params
from groundcap import params
from groundcap.pipeline import order
from groundcap.pipeline.runner import run_all, run_stage
from groundcap.pipeline.stage import Context
from groundcap.storage import parts

MAP_STAGES = ("tag", "segment", "caption_regions", "caption_scene", "crosscheck", "qa", "redact")
# every test here runs photos through the pipeline at least once
pytestmark = pytest.mark.slow


def _files(root: Path, folder: str) -> dict[str, bytes]:
    base = root / folder
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def local(small_project) -> Path:
    """Four sample photos in two parts (so parts run side by side), run by the local executor (conftest)."""
    return small_project


@pytest.mark.ray
def test_ray_writes_what_the_local_executor_writes(local, tmp_path):
    ray = pytest.importorskip("ray")
    root = tmp_path / "ray"
    try:
        run_all(Context(root=root, params=small_params(local, kind="ray", ray={**params.defaults()["executor"]["ray"],
                                                                      "local_cpus": 2}), progress=False))
    finally:
        ray.shutdown()
    for stage in MAP_STAGES:
        assert _files(root, f"work/{stage}") == _files(local, f"work/{stage}"), stage
    assert _files(root, "release") == _files(local, "release")


def test_worker_processes_write_what_one_process_writes(local, tmp_path):
    shutil.copytree(local / "work" / "ingest", tmp_path / "work" / "ingest")
    ctx = Context(root=tmp_path, params=small_params(local, workers=2), progress=False)
    for stage in ("tag", "segment"):
        run_stage(ctx, order.stage(stage))
        assert _files(tmp_path, f"work/{stage}") == _files(local, f"work/{stage}"), stage


def test_finished_parts_are_skipped_and_stale_ones_redone(local, tmp_path):
    shutil.copytree(local / "work", tmp_path / "work")
    ctx = Context(root=tmp_path, params=small_params(local), progress=False)
    tag = tmp_path / "work" / "tag"
    before = {i: parts.part_path(tag, i).stat().st_mtime_ns for i in parts.list_parts(tag)}
    parts.marker_path(tag, 1).unlink()  # killed between the part and its marker: part 1 is not finished
    (tag / ".part-00000.parquet.tmp").write_bytes(b"half")  # a killed write's leftover beside a finished part
    run_stage(ctx, order.stage("tag"))
    after = {i: parts.part_path(tag, i).stat().st_mtime_ns for i in parts.list_parts(tag)}
    assert after[0] == before[0] and after[1] != before[1]
    assert not (tag / ".part-00000.parquet.tmp").exists()
    assert _files(tmp_path, "work/tag") == _files(local, "work/tag")
    changed = small_params(local)
    changed["tag"]["merge_iou"] = 0.5  # other params: every part is redone
    run_stage(Context(root=tmp_path, params=changed, progress=False), order.stage("tag"))
    assert all(parts.read_marker(tag, i)["fingerprint"] != parts.read_marker(local / "work" / "tag", i)["fingerprint"]
               for i in after)


def test_an_image_whose_backend_raised_is_retried_on_the_next_run_up_to_the_limit(local, tmp_path, monkeypatch):
    import groundcap.stages.tag as tag_stage

    shutil.copytree(local / "work" / "ingest", tmp_path / "work" / "ingest")
    victim = parts.read_part(local / "work" / "ingest", 0, ["image_id"])[0]["image_id"]
    calls = {"n": 0}
    real = tag_stage.make_backend

    def flaky(spec):
        made = real(spec)
        if spec.step == "tagger":
            tag = made.tag

            def failing(image):
                calls["n"] += 1
                if failures_left["n"] > 0 and hashlib.sha256(image.tobytes()).digest() == pixels:
                    failures_left["n"] -= 1
                    raise OSError("GPU fell over")
                return tag(image)
            made.tag = failing
        return made

    from groundcap.ingest import decode_rgb
    first = parts.read_part(local / "work" / "ingest", 0, ["bytes"])[0]["bytes"]
    pixels = hashlib.sha256(decode_rgb(first).tobytes()).digest()
    failures_left = {"n": 2}  # its part's batch fails, then the image alone (the worker isolates it): recorded
    monkeypatch.setattr(tag_stage, "make_backend", flaky)
    ctx = Context(root=tmp_path, params=small_params(local, max_attempts=2), progress=False)
    out = tmp_path / "work" / "tag"
    run_stage(ctx, order.stage("tag"))
    row = next(r for r in parts.read_part(out, 0) if r["image_id"] == victim)
    assert row["error"] == "tag: OSError: GPU fell over"
    assert parts.read_marker(out, 0)["errors"] == {victim: 1}
    calls["n"] = 0
    run_stage(ctx, order.stage("tag"))  # the next run retries that image only, and it works this time
    assert calls["n"] == 1
    assert _files(tmp_path, "work/tag") == _files(local, "work/tag")
    failures_left["n"] = 10  # now it always fails: tried up to max_attempts, then left with its error
    parts.marker_path(out, 0).unlink()
    for attempts in (1, 2, 2):
        run_stage(ctx, order.stage("tag"))
        assert parts.read_marker(out, 0)["errors"] == {victim: attempts}


def _run_cli(root: Path, local: Path) -> subprocess.Popen:
    """``groundcap run`` of the local project's photos and params into ``root``."""
    env = {**os.environ, "GROUNDCAP_DEBUG": ""}
    return subprocess.Popen([sys.executable, "-m", "groundcap", "run", "--source", small_params(local)["source"],
                             "--workdir", str(root), "--params", str(local / "params.yaml"), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_at_any_point_then_rerun_gives_the_same_release(local, tmp_path):
    """Killed while a stage's parts are being written (tag), after a later stage's first part (qa), and while
    the release is written; each run after a kill resumes the last, and the last run's release is the local one."""
    root = tmp_path / "run"
    for kill_when in ("work/tag/part-00000.done", "work/qa/part-00000.done", "release/data"):
        proc = _run_cli(root, local)
        deadline = time.monotonic() + 300
        while not (root / kill_when).exists():
            assert proc.poll() is None, f"ended before {kill_when} appeared: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    again = _run_cli(root, local)
    assert again.wait(timeout=600) == 0, again.stderr.read().decode()[-2000:]
    assert _files(root, "release") == _files(local, "release")


@pytest.mark.parametrize(("code", "says"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_output_is_a_clear_error(local, tmp_path, monkeypatch, code, says):
    from typer.testing import CliRunner

    from groundcap.cli.app import app

    shutil.copytree(local / "work" / "ingest", tmp_path / "work" / "ingest")

    def refuse(table, where, **kwargs):
        raise OSError(code, os.strerror(code), str(where))

    monkeypatch.setattr(parts.pq, "write_table", refuse)
    result = CliRunner().invoke(app, ["tag", "--root", str(tmp_path), "-q"])
    assert result.exit_code == 2 and says in result.output and "run again" in result.output, result.output
    assert parts.list_parts(tmp_path / "work" / "tag") == []
