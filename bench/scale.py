"""The ``scale`` figures for ``bench/run.py``: the pipeline under ``dvc repro`` at N and 10N images, and DVC and
the runner's planning at 10,000+ parts (``--only scale,parts``; not in the default set: they take long).

``scale``: distinct generated images (``sources.write_sa1b``: 384x288 JPEG, ``MASKS`` given SA-1B masks each)
go through every stage as ``dvc repro`` runs them, each its own process, in a generated DVC project (this
repository's ``dvc.yaml``, ``.dvc/config``, ``src/groundcap`` and ``audits``), with the cheapest params that
still run every stage: the source's masks used as given, the embedded captioners, no detectors, no second
captioner, no redaction. Each ``dvc.yaml`` cmd runs through ``peak_rss.py``, which records the stage's own
peak RSS, wall and CPU time. Per stage: seconds per image (wall and CPU: on a shared machine only the CPU
time compares across sizes), peak RSS, files written; per project: bytes on disk per image in ``work/``,
``release/``, ``reports/`` and ``.dvc/cache``, counted once per inode (a hardlinked cache adds nothing), against
the images' own bytes; ``dvc repro``'s own time beside the stages'; ``dvc status`` and a no-op ``dvc repro``.
Then each figure's growth from N to 10N (targets: time <= 11x, peak RSS <= 1.2x).

``parts``: ``ingest`` alone under DVC with ``part_size: 1`` on P tiny images, so P parts (2P files): the
``dvc commit`` that records them, ``dvc status``, a no-op ``dvc repro``, and ``resume.plan`` of ``tag`` over them;
then ``dvc status`` again with ``READERS`` trivial stages that depend on ``work/ingest``: what each stage that
names a folder adds.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import yaml

import sources  # bench/sources.py, beside this file
from groundcap import params
from groundcap.pipeline import dvc_yaml, order, resume
from groundcap.pipeline.stage import Context
from timing import table

REPO = Path(__file__).resolve().parents[1]
_PEAK_RSS = Path(__file__).with_name("peak_rss.py")
MB = 1e6
MASKS = 6  # given masks per image: each is a region every later stage captions, checks and releases
# every stage runs, each as cheaply as it can: given masks, embedded captioners, nothing doubled
CHEAP = {"tag": {"taggers": ["palette"], "detectors": []}, "segment": {"given": "use"},
         "crosscheck": {"captioner": None, "scene_composer": None},
         # embedded images (the release's one copy, the disk figure's worst case): the bench made them, so it may
         "release": {"redact": "none", "license": "cc0-1.0",
                     "license_reason": "bench/sources.py generates these images"}}
FOLDERS = ("work", "release", "reports", ".dvc/cache")
READERS = 10  # stages that read work/ingest in the parts figure (the generated dvc.yaml names it 12 times)


def _merge(base: dict, over: dict) -> dict:
    return {**base, **{k: _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                       for k, v in over.items()}}


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sh(root: Path, *cmd: str) -> tuple[float, float]:
    """Run ``cmd`` in ``root``; its wall and CPU seconds (on a shared machine the wall time follows the load).
    Raises with the output's tail when it fails."""
    # OpenMP threads that wait spinning (libgomp's default) burn the CPU time of every torch stage on a loaded machine
    # (MiniLM's embeddings: 0.75 s of CPU for six captions at load 10, 0.14 s passive; same threads, same numbers)
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start, cpu = time.perf_counter(), _cpu_children()
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - start, _cpu_children() - cpu
    if out.returncode:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {out.returncode} in {root}:\n{tail}")
    return seconds, cpu


def make_project(root: Path, source: str, overrides: dict, stages: tuple[str, ...]) -> dict:
    """A git + DVC project in ``root`` running ``stages`` on ``source``; each cmd records its peak RSS and
    seconds in ``.scale/<stage>``. Returns the rendered ``dvc.yaml`` stages."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "src" / "groundcap", root / "src" / "groundcap",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "audits", root / "audits")
    shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
    run_params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), {"source": source, **overrides})
    (root / "params.yaml").write_text(yaml.safe_dump(run_params, sort_keys=False))
    body = yaml.safe_load(dvc_yaml.render())
    body["stages"] = {name: {**entry, "cmd": f"{sys.executable} {_PEAK_RSS} .scale/{name} groundcap {name}"}
                      for name, entry in body["stages"].items() if name in stages}
    (root / "dvc.yaml").write_text(yaml.safe_dump(body, sort_keys=False, width=120))
    (root / ".scale").mkdir()
    (root / ".gitignore").write_text("/.scale\n")
    _sh(root, "git", "init", "-q")
    _sh(root, sys.executable, "-m", "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the link types the repository uses
    return body["stages"]


def _outs(entry: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in [*entry.get("outs", []), *entry.get("metrics", []),
                                                                   *entry.get("plots", [])]]


def _files(root: Path, paths: list[str]) -> list[Path]:
    out = []
    for p in (root / p for p in paths):
        out += [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p] if p.is_file() else []
    return out


def disk(root: Path) -> dict[str, int]:
    """Bytes on disk (allocated blocks) under each of ``FOLDERS`` and in all of them, each inode counted once; and
    under each folder of ``work/`` and ``release/`` (``work/ingest`` ...): where the bytes are."""
    blocks = {folder: {f.stat().st_ino: f.stat().st_blocks * 512 for f in _files(root, [folder])} for folder in FOLDERS}
    inner = {sub.relative_to(root).as_posix(): sum(f.stat().st_blocks * 512 for f in _files(root, [str(sub)]))
             for top in ("work", "release") for sub in sorted((root / top).iterdir()) if sub.is_dir()}
    return {**{k: sum(v.values()) for k, v in blocks.items()},
            "all, once": sum({ino: b for v in blocks.values() for ino, b in v.items()}.values()), **inner}


def print_disk(figures: dict) -> None:
    """Bytes on disk per image, per folder and per stage table, at each size, against the images' own bytes."""
    sizes = sorted(figures)
    keys = [*FOLDERS, "all, once", *sorted({k for n in sizes for k in figures[n]["disk"]} - {*FOLDERS, "all, once"})]
    rows = [["bytes on disk per image", *(f"{n}: kB" for n in sizes), *(f"{n}: x image" for n in sizes)]]
    for key in keys:
        got = [figures[n]["disk"].get(key, 0) for n in sizes]
        rows.append([key, *(f"{b / n / 1e3:.1f}" for b, n in zip(got, sizes, strict=True)),
                     *(f"{b / figures[n]['image_bytes']:.2f}" for b, n in zip(got, sizes, strict=True))])
    rows.append(["the images (JPEG)", *(f"{figures[n]['image_bytes'] / n / 1e3:.1f}" for n in sizes),
                 *("1.00" for _ in sizes)])
    table(rows)
    for n in sizes:  # an image QA failed is not released: the worst case releases every one, at the same cost each
        f = figures[n]
        worst = f["disk"]["all, once"] + (n - f["released"]) * f["disk"]["release/data"] / max(f["released"], 1)
        print(f"  {n} images: release/data holds {f['released']} (the others failed QA); with every image released "
              f"about {worst / n / 1e3:.1f} kB an image in all, {worst / f['image_bytes']:.2f}x the image")


def measure(root: Path, stages: dict) -> dict:
    """``dvc repro`` in ``root``, then ``dvc status`` and a no-op ``dvc repro``: every figure of one size."""
    repro, _ = _sh(root, sys.executable, "-m", "dvc", "repro", "-q")
    runs = {name: {"seconds": float((root / ".scale" / f"{name}.seconds").read_text()),
                   "cpu": float((root / ".scale" / f"{name}.cpu").read_text()),
                   "rss_mb": int((root / ".scale" / name).read_text()) * 1024 / MB,
                   "files": len(_files(root, _outs(entry)))} for name, entry in stages.items()}
    status = _sh(root, sys.executable, "-m", "dvc", "status", "-q")  # (wall, CPU) seconds
    noop = _sh(root, sys.executable, "-m", "dvc", "repro", "-q")
    return {"runs": runs, "repro": repro, "status": status, "noop": noop, "disk": disk(root)}


def _pair(seconds: tuple[float, float]) -> str:
    return f"{seconds[0]:.1f} ({seconds[1]:.1f})"


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}x" if a else "-"


def bench_scale(tmp: Path, sizes: tuple[int, ...], part_size: int) -> dict:
    """The whole pipeline under ``dvc repro`` at each of ``sizes``; prints the tables, returns the figures."""
    figures = {}
    for n in sizes:
        data = tmp / f"scale-data-{n}"
        source = sources.write_sa1b(data, n, masks=MASKS)
        images = 0
        for shard in data.glob("*.tar"):
            with tarfile.open(shard) as tar:
                images += sum(m.size for m in tar.getmembers() if m.name.endswith(".jpg"))
        root = tmp / f"scale-{n}"
        stages = make_project(root, source, {**CHEAP, "part_size": part_size}, order.NAMES)
        figures[n] = {**measure(root, stages), "image_bytes": images}
        figures[n]["released"] = sum(pq.ParquetFile(f).metadata.num_rows
                                     for f in (root / "release" / "data").glob("*.parquet"))
        print(f"scale figures at {n} images: {json.dumps(figures[n])}", flush=True)  # runs of one size each combine
        shutil.rmtree(data)
    if len(figures) > 1:
        _print_scale(figures, part_size)
    else:
        print_disk(figures)
    return figures


def _print_scale(figures: dict, part_size: int) -> None:
    sizes = sorted(figures)
    small, big = figures[sizes[0]], figures[sizes[-1]]
    n0, n1 = sizes[0], sizes[-1]
    print(f"scale: every stage under dvc repro, each its own process, {n0} vs {n1} images (384x288 JPEG, {MASKS} "
          f"given masks each, part_size {part_size}, cheapest params: bench/scale.py CHEAP):")
    rows = [["stage", f"s/img {n0}", f"s/img {n1}", "time growth", f"CPU s/img {n0}", f"CPU s/img {n1}",
             "CPU growth", f"RSS {n0} MB", f"RSS {n1} MB", "RSS growth", f"files {n0}", f"files {n1}"]]
    for name in small["runs"]:
        a, b = small["runs"][name], big["runs"][name]
        rows.append([name, f"{a['seconds'] / n0:.4f}", f"{b['seconds'] / n1:.4f}", _ratio(a["seconds"], b["seconds"]),
                     f"{a['cpu'] / n0:.4f}", f"{b['cpu'] / n1:.4f}", _ratio(a["cpu"], b["cpu"]),
                     f"{a['rss_mb']:.0f}", f"{b['rss_mb']:.0f}", _ratio(a["rss_mb"], b["rss_mb"]), str(a["files"]),
                     str(b["files"])])
    stage_s, stage_cpu = ([sum(r[key] for r in f["runs"].values()) for f in (small, big)] for key in ("seconds", "cpu"))
    rows.append(["all stages", f"{stage_s[0] / n0:.4f}", f"{stage_s[1] / n1:.4f}", _ratio(*stage_s),
                 f"{stage_cpu[0] / n0:.4f}", f"{stage_cpu[1] / n1:.4f}", _ratio(*stage_cpu), *[""] * 5])
    dvc_own = [f["repro"] - s for f, s in zip((small, big), stage_s, strict=True)]
    rows.append(["dvc repro's own", f"{dvc_own[0] / n0:.4f}", f"{dvc_own[1] / n1:.4f}", _ratio(*dvc_own),
                 *[""] * 8])
    table(rows)
    for key, what in (("status", "dvc status"), ("noop", "no-op dvc repro")):
        (wall0, cpu0), (wall1, cpu1) = small[key], big[key]
        print(f"  {what}: {wall0:.1f} s ({cpu0:.1f} s CPU) at {n0} images, {wall1:.1f} s ({cpu1:.1f} s CPU) at {n1} "
              f"(CPU {_ratio(cpu0, cpu1)})")
    print_disk(figures)
    worst = max(small["runs"], key=lambda s: big["runs"][s]["cpu"] / small["runs"][s]["cpu"])
    print(f"  growth, {n1 // n0}x the images: CPU time {_ratio(*stage_cpu)} (worst stage {worst}: "
          f"{_ratio(small['runs'][worst]['cpu'], big['runs'][worst]['cpu'])}; target <= {1.1 * n1 / n0:.0f}x), "
          f"peak RSS max {max(big['runs'][s]['rss_mb'] / small['runs'][s]['rss_mb'] for s in small['runs']):.2f}x "
          f"(target <= 1.2x)")


def bench_parts(tmp: Path, n_parts: int) -> dict:
    """DVC and the runner's planning over ``n_parts`` parts of ``ingest`` (one tiny image each). The parts are
    written in this process with fsync a no-op (two fsyncs per part cost about 70 ms here: 10,000 parts would
    take most of the run) and recorded by ``dvc commit``, which hashes and caches them as ``dvc repro`` would."""
    data = tmp / f"parts-data-{n_parts}"
    data.mkdir(parents=True)
    for k in range(n_parts):
        (data / f"{k:07d}.jpg").write_bytes(sources._jpeg(k))
    root = tmp / f"parts-{n_parts}"
    make_project(root, str(data), {**CHEAP, "part_size": 1}, ("ingest",))
    ctx = Context(root=root, params=params.load(root / "params.yaml"), progress=False)
    start = time.perf_counter()
    with mock.patch("os.fsync"):
        order.stage("ingest").run(ctx)
    figures = {"write": time.perf_counter() - start}
    figures["commit"] = _sh(root, sys.executable, "-m", "dvc", "commit", "-f", "-q")
    figures["status"] = _sh(root, sys.executable, "-m", "dvc", "status", "-q")
    figures["noop"] = _sh(root, sys.executable, "-m", "dvc", "repro", "-q")
    start, cpu = time.perf_counter(), time.process_time()
    indices, tasks = resume.plan(ctx, order.stage("tag"))
    figures["plan"] = time.perf_counter() - start, time.process_time() - cpu
    assert len(indices) == len(tasks) == n_parts, (len(indices), len(tasks))
    # READERS more stages name work/ingest as a dependency: DVC walks a folder once per stage that names it
    body = yaml.safe_load((root / "dvc.yaml").read_text())
    body["stages"].update({f"read{k}": {"cmd": f"echo {k} > read{k}.txt", "deps": ["work/ingest"],
                                        "outs": [f"read{k}.txt"]} for k in range(READERS)})
    (root / "dvc.yaml").write_text(yaml.safe_dump(body, sort_keys=False, width=120))
    _sh(root, sys.executable, "-m", "dvc", "repro", "-q")
    figures["status_read"] = _sh(root, sys.executable, "-m", "dvc", "status", "-q")
    files = len(_files(root, ["work/ingest"]))
    per_visit = (figures["status_read"][1] - figures["status"][1]) / (READERS * files)
    print(f"parts: ingest alone under DVC, {n_parts} parts of one image ({files} files in work/ingest): written in "
          f"{figures['write']:.0f} s without fsync; wall (CPU) seconds: dvc commit (hash + cache) "
          f"{_pair(figures['commit'])}, dvc status {_pair(figures['status'])}, no-op dvc repro "
          f"{_pair(figures['noop'])}; resume.plan of tag over them {_pair(figures['plan'])} "
          f"({figures['plan'][1] / n_parts * 1e3:.2f} ms CPU per part); with {READERS} more stages reading "
          f"work/ingest, dvc status {_pair(figures['status_read'])}: {per_visit * 1e3:.3f} ms CPU per file per stage")
    shutil.rmtree(data)
    return figures
