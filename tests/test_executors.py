"""Executors and resume: Ray and worker processes write what the local executor writes, byte for byte;
a run killed with SIGKILL at any point and run again gives the same release; failed images are retried."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import small_params
from groundcap import params
from groundcap.pipeline import order
from groundcap.pipeline.runner import run_all, run_stage
from groundcap.pipeline.stage import Context
from groundcap.sources import reference
from groundcap.storage import parts
from ports import free_port

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
    """Every stage on a local Ray cluster, one actor per stage taking both parts in turn: each actor is a process
    that imports the stage and loads its models, and two side by side are the cluster test's (below)."""
    ray = pytest.importorskip("ray")
    root = tmp_path / "ray"
    options = {**params.defaults()["executor"]["ray"], "local_cpus": 2, "actors": 1}
    try:
        run_all(Context(root=root, params=small_params(local, kind="ray", ray=options), progress=False))
    finally:
        ray.shutdown()
    for stage in MAP_STAGES:
        assert _files(root, f"work/{stage}") == _files(local, f"work/{stage}"), stage
    assert _files(root, "release") == _files(local, "release")


def _kill_tree(proc: psutil.Process) -> None:
    """SIGKILL ``proc`` and every process under it: a node lost at once, raylet and workers."""
    tree = [*proc.children(recursive=True), proc]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)


@pytest.fixture
def ray_cluster():
    """A Ray head (no CPUs: no actor lands there) and two worker nodes, each its own ``ray start --block`` process
    with its own temp dir, declared resources and working directory (a relative path means something else on each);
    yields (address, environment a driver needs, {worker name: its ``ray start`` process})."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).parent / "ray"
    base = Path(tempfile.mkdtemp(prefix="gc-ray-"))  # short: Ray's unix sockets live under it
    # a token of the test's own (Ray turns token auth on when ~/.ray/auth_token exists); a dead node is noticed in
    # seconds, not Ray's default 15+, and a live but slow one still needs three missed checks of 10 s each
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_health_check_period_ms": "1000",
           "RAY_health_check_failure_threshold": "3"}
    port = free_port()
    nodes = {"head": ["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                      f"--dashboard-port={free_port()}"],
             "a": [f"--address=127.0.0.1:{port}", "--num-cpus=1", '--resources={"site_a": 1}'],
             "b": [f"--address=127.0.0.1:{port}", "--num-cpus=1", '--resources={"site_b": 1}']}
    procs, logs = {}, contextlib.ExitStack()
    try:
        for group in (["head"], ["a", "b"]):  # the head first: a node that waits over 30 s on the GCS gives up
            for name in group:
                (base / name).mkdir()
                procs[name] = subprocess.Popen(
                    [str(ray_bin), "start", *nodes[name], f"--temp-dir={base / name}", "--block",
                     "--object-store-memory=80000000", f"--dashboard-agent-listen-port={free_port()}"],
                    cwd=base / name, env=env, stdout=logs.enter_context((base / f"{name}.log").open("w")),
                    stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while not all("Ray runtime started" in (base / f"{n}.log").read_text() for n in group):
                for name in group:
                    assert procs[name].poll() is None, (base / f"{name}.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"Ray nodes {group} did not start in 120 s"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}", env, {n: procs[n] for n in ("a", "b")}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                _kill_tree(psutil.Process(proc.pid))
        logs.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.ray
def test_a_ray_cluster_that_loses_a_node_mid_stage_writes_what_the_local_executor_writes(local, tmp_path,
                                                                                       ray_cluster):
    """``groundcap segment`` (as ``dvc repro`` runs it: in the shared folder, root ``.``) on a head and two worker
    nodes; the first worker node seen running a part is SIGKILLed, and what it was writing is left half-written:
    Ray restarts its actor on the other node, the stage ends, and the shared folder holds what a local run wrote,
    byte for byte, and the release built from it too."""
    address, env, workers = ray_cluster
    shared = tmp_path / "shared"  # one machine: every node reaches it at the same path
    for stage in ("ingest", "tag"):
        shutil.copytree(local / "work" / stage, shared / "work" / stage)
    p = small_params(local, kind="ray", ray={**params.defaults()["executor"]["ray"], "address": address})
    (shared / "params.yaml").write_text(yaml.safe_dump(p))
    driver = subprocess.Popen([sys.executable, "-m", "groundcap", "segment", "-q"], cwd=shared, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, deadline, victim = shared / "work" / "segment", time.monotonic() + 300, None
    while victim is None:
        assert driver.poll() is None, f"the stage ended before a node was lost: {driver.stdout.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, "no part was finished in 300 s"
        time.sleep(0.02)
        nodes = [psutil.Process(p.pid) for p in workers.values()]
        victim, actor = next(((n, p.pid) for n in nodes for p in n.children(recursive=True) if _computing(p)),
                             (None, None))
    _kill_tree(victim)
    # what a SIGKILL in the middle of the actor's write leaves (too short a moment to hit on purpose)
    pending = next(i for i in parts.list_parts(local / "work" / "segment") if not parts.marker_path(out, i).exists())
    half = parts.part_path(local / "work" / "segment", pending).read_bytes()[:1000]
    (out / f".part-{pending:05d}.parquet.{actor}-0badf00d.tmp").write_bytes(half)
    assert driver.wait(timeout=300) == 0, driver.stdout.read().decode()[-3000:]
    assert _files(shared, "work/segment") == _files(local, "work/segment")
    for stage in ("caption_regions", "qa", "split", "redact"):  # the rest of build's inputs, as the local run wrote
        shutil.copytree(local / "work" / stage, shared / "work" / stage)
    run_stage(Context(root=shared, params=small_params(local), progress=False), order.stage("build"))
    for folder in order.stage("build").outs:
        assert _files(shared, folder) == _files(local, folder), folder


def _computing(proc: psutil.Process) -> bool:
    """Whether ``proc`` is a Ray Data actor running a task (Ray sets the process title): computing a part."""
    with contextlib.suppress(psutil.NoSuchProcess):
        title = " ".join(proc.cmdline())
        return title.startswith("ray::MapWorker") and ".submit" in title
    return False


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
    first = reference.read_part(local / "work" / "ingest", 0, ["bytes"], local)["bytes"][0].as_py()
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
