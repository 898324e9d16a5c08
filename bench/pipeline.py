"""Whole-pipeline benchmarks for ``bench/run.py``: per-stage peak RSS and time at 1x and Nx the images, and the
``build`` stage's throughput beside a plain ``tarfile`` of the same image bytes.

The data set is the 12 bundled sample photos (``groundcap.sources.sample``), each written ``copies`` times as a
different picture: the 8 flips/rotations of the square's symmetry group, then the same shifted cyclically by
half the image (``np.roll``). Small edits would not do: dedup clusters near-duplicates (``dedup.keep: one``)
and only one image per cluster would reach ``split`` and ``build``, so "10x the images" would be 10x for
the first stages only. Every copy keeps the photo's pixel count and format (PNG stays PNG, JPEG is
re-encoded at quality 92), and one pixel is nudged per copy so no two files are byte-equal.

Every stage runs as its own process (``python -m groundcap STAGE --root DIR --params FILE -q``, through
``peak_rss.py``, which records the process's own peak RSS; with ``executor.workers: 1``, the default, a
stage is one process). Its wall time includes interpreter start-up and imports, so the per-image
seconds of a 12-image run are mostly start-up; ``startup()`` measures that floor
(``python -m groundcap --help``) for reference.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from groundcap import params
from groundcap.builders import ReleaseWriter
from groundcap.builders.columns import join_part
from groundcap.builders.writer import OPTIONAL_FORMATS
from groundcap.pipeline import order, runner
from groundcap.pipeline.order import NAMES as ORDER
from groundcap.pipeline.stage import Context
from groundcap.sources import reference, sample
from groundcap.storage import parts
from timing import best, table  # bench/timing.py, beside this file

_PEAK_RSS = Path(__file__).with_name("peak_rss.py")
_ENV = {"DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # as `make` exports them
MB = 1e6


# --- the data set ----------------------------------------------------------------------------------

def _variant(rgb: np.ndarray, k: int) -> np.ndarray:
    """Copy ``k`` of an image: the 8 symmetries of the square, then again each rolled by half the image."""
    out = np.rot90(rgb, k % 4)
    if (k // 4) % 2:
        out = out[:, ::-1]
    if (k // 8) % 2:
        out = np.roll(out, (out.shape[0] // 2, out.shape[1] // 2), axis=(0, 1))
    out = np.array(out)  # a writable contiguous copy
    out[0, 0] = (out[0, 0].astype(np.int32) + k) % 256  # never byte-equal to another copy
    return out


def write_images(dest: Path, copies: int, photos: int | None = None) -> list[Path]:
    """The first ``photos`` sample photos (all 12 by default), ``copies`` of each (copy 0 is the file
    itself, byte for byte), into ``dest``."""
    if not 1 <= copies <= 16:
        raise ValueError(f"copies must be within 1..16 (the distinct variants), got {copies}")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sample.paths()[:photos]:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            rgb = np.asarray(img.convert("RGB"))
        for k in range(copies):
            out = dest / f"{path.stem}-{k:02d}{path.suffix}"
            if k == 0:
                out.write_bytes(data)
            else:
                img = Image.fromarray(_variant(rgb, k))
                img.save(out, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
            written.append(out)
    return written


def write_params(path: Path, images: Path, overrides: dict | None = None) -> Path:
    """A params file with ``source`` set to ``images``, the sections in ``overrides`` on top, and every other key
    at its default (JSON: a YAML file)."""
    path.write_text(json.dumps({"source": str(images), **(overrides or {})}), encoding="utf-8")
    return path


# --- stages as processes ---------------------------------------------------------------------------

@dataclass
class StageRun:
    stage: str
    seconds: float
    maxrss_mb: float  # the process's own peak resident set (VmHWM)
    returncode: int
    output: str


def run_groundcap(name: str, args: Sequence[str], log: Path) -> StageRun:
    """``python -m groundcap ARGS`` through ``peak_rss.py``; stdout and stderr go to ``log``."""
    env = {**os.environ, **{k: v for k, v in _ENV.items() if k not in os.environ}}
    peak = log.with_suffix(".peak")
    peak.unlink(missing_ok=True)
    with open(log, "w+b") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(_PEAK_RSS), str(peak), "groundcap", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait()
        except BaseException:  # interrupted: no stage left running in a folder about to be removed
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    rss = int(peak.read_text()) * 1024 / MB if peak.exists() else float("nan")
    return StageRun(name, seconds, rss, proc.returncode, text)


def run_stages(root: Path, params_file: Path, stages: Iterable[str]) -> list[StageRun]:
    """Run ``stages`` in order, one process each; raises with the log tail when one fails."""
    root.mkdir(parents=True, exist_ok=True)
    runs = []
    for stage in stages:
        run = run_groundcap(stage, [stage, "--root", str(root), "--params", str(params_file), "-q"],
                            root / f".bench-{stage}.log")
        if run.returncode != 0:
            tail = "\n".join(run.output.strip().splitlines()[-15:])
            raise RuntimeError(f"stage {stage} exited with {run.returncode}:\n{tail}")
        runs.append(run)
    return runs


def startup(tmp: Path) -> StageRun:
    """Interpreter start-up plus ``groundcap``'s CLI imports: the floor under every stage process."""
    return run_groundcap("startup", ["--help"], tmp / ".bench-startup.log")


# --- work/ as the build stage sees it --------------------------------------------------------------

def _column(directory: Path, columns: list[str]) -> dict[str, list]:
    """``columns`` of every finished part of a stage folder, in part order."""
    rows = [r for i in parts.list_parts(directory) for r in parts.read_part(directory, i, columns)]
    return {c: [r[c] for r in rows] for c in columns}


def counts(root: Path) -> dict[str, int]:
    """Images ingested, passed by QA, kept by dedup, and given a split (released)."""
    work = root / "work"
    out = {"ingested": len(_column(work / "ingest", ["image_id"])["image_id"])}
    if (work / "qa").is_dir():
        out["qa passed"] = sum(bool(v) for v in _column(work / "qa", ["passed"])["passed"])
    if (work / "dedup").is_dir():
        out["dedup kept"] = sum(bool(v) for v in _column(work / "dedup", ["kept"])["kept"])
    if (work / "split").is_dir():
        out["released"] = sum(v is not None for v in _column(work / "split", ["split"])["split"])
    return out


def released_ids(root: Path) -> set[str]:
    split = _column(root / "work" / "split", ["image_id", "split"])
    return {i for i, s in zip(split["image_id"], split["split"], strict=True) if s is not None}


# --- build vs tar ----------------------------------------------------------------------------------

def build_once(root: Path, run_params: dict) -> None:
    runner.run_stage(Context(root=root, params=run_params, progress=False), order.stage("build"))


def released_images(root: Path, ids: set[str]) -> Iterator[tuple[str, bytes]]:
    """``(image_id, bytes)`` of the released images, in part order, as data/ holds them: redact's copy
    (blurred, or stripped of its metadata) where it made one, else ingest's bytes, read from the source where
    ingest kept a reference (checked against its SHA-256); read as build reads them."""
    work = root / "work"
    for index in parts.list_parts(work / "ingest"):
        with pq.ParquetFile(parts.part_path(work / "ingest", index)) as f:
            ingest = f.read(columns=["image_id", "bytes", "reference"]).to_pydict()
        with pq.ParquetFile(parts.part_path(work / "redact", index)) as f:
            redacted = f.read(columns=["bytes"])["bytes"].to_pylist()
        for image_id, data, ref, red in zip(ingest["image_id"], ingest["bytes"], ingest["reference"], redacted,
                                            strict=True):
            if image_id not in ids:
                continue
            if red is None:
                red = data if ref is None else reference.read(ref, root, image_id)
            yield image_id, red


def tar_once(root: Path, ids: set[str], dest: Path) -> None:
    """The plain baseline: the released image bytes (those build writes into data/, read from work/ where
    they are) as one tar member per image into one tar, flushed and fsynced (as build's files are)."""
    with open(dest, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w") as tar:
            for image_id, data in released_images(root, ids):
                info = tarfile.TarInfo(image_id)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        fh.flush()
        os.fsync(fh.fileno())


def image_bytes(root: Path, ids: set[str]) -> int:
    return sum(len(data) for _, data in released_images(root, ids))


BUILD_DIRS = ("data", "regions", "wds", "coco")  # what build writes (plots/ and the card are the card stage's)


def release_sizes(release: Path) -> dict[str, int]:
    """Bytes build wrote per release folder."""
    return {name: sum(f.stat().st_size for f in (release / name).rglob("*") if f.is_file())
            for name in BUILD_DIRS if (release / name).is_dir()}


def builder_times(root: Path, run_params: dict, repeat: int, dest: Path) -> dict[str, float]:
    """Seconds of each part of ``build`` alone, best of ``repeat``: reading and joining work/ into
    batches (``builders.columns.join_part``), then each release folder's writer fed those batches
    from memory (one process), the opt-in ones (``build.formats``) included."""
    work = root / "work"
    indices = parts.list_parts(work / "ingest")
    batches = [join_part(work, i) for i in indices]
    out = {"read + join work/": best(lambda: [join_part(work, i) for i in indices], repeat)}
    every_format = {**run_params, "build": {**run_params["build"], "formats": list(OPTIONAL_FORMATS)}}

    def feed(kind: str) -> None:
        writer = ReleaseWriter(dest, every_format, kinds=(kind,))
        for batch in batches:
            writer.add_table(batch)
        writer.close()

    for kind in ("data", "regions", "wds", "coco"):
        opt_in = " (opt-in)" if kind in OPTIONAL_FORMATS.values() else ""
        out[f"{kind}/{opt_in}"] = best(lambda kind=kind: feed(kind), repeat)
    return out


# --- the figures -----------------------------------------------------------------------------------

def project(tmp: Path, copies: int, photos: int | None, names: Sequence[str],
            overrides: dict | None = None) -> tuple[Path, dict[str, StageRun], int]:
    """The ``copies``x project in ``tmp`` (params: the defaults with ``overrides``), its images written and the
    stages ``names`` run, one process each; returns its root, the runs by stage and the number of images."""
    images = write_images(tmp / f"images-{copies}x", copies, photos)
    root = tmp / f"project-{copies}x"
    params_file = write_params(tmp / f"params-{copies}x.yaml", tmp / f"images-{copies}x", overrides)
    runs = run_stages(root, params_file, names)
    size = sum(f.stat().st_size for f in images) / MB
    got = ", ".join(f"{k} {v}" for k, v in counts(root).items())
    print(f"pipeline {copies}x: {len(images)} files, {size:.1f} MB; {got}")
    return root, {r.stage: r for r in runs}, len(images)


def released_project(tmp: Path, copies: int, photos: int | None, overrides: dict | None = None) -> tuple[Path, dict]:
    """The ``copies``x project run up to ``split`` (the pipeline figure's, when it ran) and its params."""
    root = tmp / f"project-{copies}x"
    if not (root / "work" / "split").is_dir():
        root, _, _ = project(tmp, copies, photos, ORDER[:ORDER.index("build")], overrides)
    return root, params.load(tmp / f"params-{copies}x.yaml")


def bench_pipeline(tmp: Path, copies: int, photos: int | None, overrides: dict | None = None) -> None:
    """Peak RSS and seconds per image of every stage, each its own process, at 1x and ``copies``x."""
    base = startup(tmp)
    _, one, n1 = project(tmp, 1, photos, ORDER, overrides)
    _, many, nn = project(tmp, copies, photos, ORDER, overrides)
    print(f"pipeline peak RSS and seconds per image, each stage its own process, {n1} vs {nn} images "
          f"(start-up floor: {base.maxrss_mb:.0f} MB, {base.seconds:.1f} s per process):")
    x = f"{copies}x"
    rows = [["stage", "RSS 1x MB", f"RSS {x} MB", f"{x}/1x", "s/img 1x", f"s/img {x}", f"{x}/1x", f"s {x}"]]
    for stage in ORDER:
        a, b = one[stage], many[stage]
        rows.append([stage, f"{a.maxrss_mb:.0f}", f"{b.maxrss_mb:.0f}", f"{b.maxrss_mb / a.maxrss_mb:.2f}x",
                     f"{a.seconds / n1:.3f}", f"{b.seconds / nn:.3f}", f"{(b.seconds / nn) / (a.seconds / n1):.2f}x",
                     f"{b.seconds:.1f}"])
    total1, totaln = sum(r.seconds for r in one.values()) / n1, sum(r.seconds for r in many.values()) / nn
    rows.append(["all stages", "", "", "", f"{total1:.3f}", f"{totaln:.3f}", f"{totaln / total1:.2f}x",
                 f"{totaln * nn:.1f}"])
    table(rows)
    worst = max(ORDER, key=lambda s: many[s].maxrss_mb / one[s].maxrss_mb)
    print(f"pipeline peak RSS growth, {x} the images: max over stages "
          f"{many[worst].maxrss_mb / one[worst].maxrss_mb:.2f}x ({worst}; target <= 1.5x)")


def bench_build(tmp: Path, copies: int, photos: int | None, repeat: int, builders: tuple[int, ...] = (1, 2, 4),
                overrides: dict | None = None) -> None:
    """``build`` in process on the ``copies``x work/ beside ``tarfile`` writing the same image bytes (those
    data/ holds, checked), each variant and its baseline timed in turns under the same patch (fsync a no-op
    for both), and with each of ``builders`` build processes; then each part alone."""
    root, run_params = released_project(tmp, copies, photos, overrides)
    ids = released_ids(root)
    n, size = len(ids), image_bytes(root, ids)
    build_once(root, run_params)  # once untimed: the imports it makes on first use (webdataset: torch) are no build
    os.sync()  # the pipeline's writes flushed first: neither side's fsync waits on the project's writeback
    in_data = sum(pc.sum(pc.binary_length(pq.read_table(f, columns=["image"])["image"].combine_chunks().field("bytes")))
                  .as_py() or 0 for f in (root / "release" / "data").glob("*.parquet"))
    assert in_data == size, f"the baseline writes {size} image bytes, data/ holds {in_data}"
    size /= MB
    print(f"build vs tarfile, {n} released images ({size:.1f} MB of image bytes, the same bytes in both), best of "
          f"{repeat}, the two timed in turns:")
    workers = run_params["executor"]["build_workers"]
    variants = [("defaults", None, workers), ("fsync a no-op (in both)", "os.fsync", workers)]
    variants += [(f"executor.build_workers {w}", None, w) for w in builders if w != workers]
    for name, patch, w in variants:
        params_w = {**run_params, "executor": {**run_params["executor"], "build_workers": w}}
        tar_times, build_times = [], []
        with mock.patch(patch) if patch else contextlib.nullcontext():
            for _ in range(repeat):
                tar_times.append(best(lambda: tar_once(root, ids, tmp / "baseline.tar"), 1))
                build_times.append(best(lambda p=params_w: build_once(root, p), 1))
        t_tar, t = min(tar_times), min(build_times)
        written = sum(release_sizes(root / "release").values()) / MB
        print(f"  {name}: build {n / t:.0f} img/s ({t:.2f} s, wrote {written:.0f} MB), tarfile {n / t_tar:.0f} img/s "
              f"({t_tar:.2f} s, {size:.0f} MB); build/tar = {t_tar / t:.2f}x per image (target >= 0.5x), "
              f"{(written / t) / (size / t_tar):.2f}x per byte written")
    print("  written by build: " + ", ".join(f"{d}/ {b / MB:.1f} MB ({b / MB / size:.1f}x the images)"
                                              for d, b in release_sizes(root / "release").items()))
    by_part = builder_times(root, run_params, repeat, tmp / "builders")
    print("  build alone, by part: " + ", ".join(f"{k} {v:.2f} s" for k, v in by_part.items()))
