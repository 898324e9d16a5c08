"""The measuring tools under bench/ that a figure's meaning rests on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import growth

BENCH = Path(growth.__file__).parent


def test_content_defined_chunks_survive_an_insertion():
    """Xet-style chunks: sizes within bounds and covering the data; after bytes are inserted in the
    middle, all but the chunks around the insertion are found again."""
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    edited = data[: 1 << 20] + b"inserted" * 125 + data[1 << 20:]
    first = list(growth.chunks(data))
    assert sum(size for _, size in first) == len(data)
    assert all(growth.MIN_CHUNK <= size <= growth.MAX_CHUNK for _, size in first[:-1])
    assert 0.5 < len(data) / len(first) / growth.TARGET < 2  # about one cut per 64 KiB
    seen = {digest for digest, _ in first}
    new = sum(size for digest, size in growth.chunks(edited) if digest not in seen)
    assert new < 3 * growth.MAX_CHUNK


@pytest.mark.slow
@pytest.mark.models
def test_the_build_baseline_writes_the_bytes_data_holds(sample_project):
    """The build figure's tarfile baseline is like for like: the released bytes (redact's copy where it made
    one), which data/ holds, not ingest's originals."""
    import pipeline

    data = {r["image_id"]: r["image"]["bytes"] for f in sorted((sample_project / "release" / "data").glob("*.parquet"))
            for r in pq.read_table(f, columns=["image_id", "image"]).to_pylist()}
    assert dict(pipeline.released_images(sample_project, pipeline.released_ids(sample_project))) == data


@pytest.mark.slow  # five tiny models built and run in a bench process: about 10 s on an idle 2-core machine
@pytest.mark.models
def test_the_gpu_device_check_runs_every_step_at_tiny_scale(tmp_path):
    """bench/device_check.sh is what a session with a lent GPU runs (bench/gpu.py at real size); here the same
    script and code on the CPU, tiny models whose text towers read as many tokens as the real ones (OWLv2: 16,
    fewer than its prompts' characters). Both captioning rounds send one request per region, though random
    weights never validate a short caption."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_CHECK_SCALE": "tiny",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(["bash", str(BENCH / "device_check.sh"), "--images", "1", "--regions", "2", "--vlm-tokens",
                           "4"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["scale"] == "tiny"
    assert (tmp_path / "gpu.log").read_text().endswith(json.dumps(results, indent=1) + "\n")
    steps = {k: v for k, v in results.items() if isinstance(v, dict) and "s_per_image" in v}
    assert len(steps) == 7 and all(v["s_per_image"] > 0 and v["images"] == 1 for v in steps.values())
    assert [v["requests"] for k, v in steps.items() if k.startswith("region_captioner")] == [2, 2]
    assert set(results["build_s"]) == {"clip", "owlv2", "grounding_dino", "sam", "vlm"}


def test_the_colour_check_reads_vlm_colour_words_on_the_held_out_set():
    """bench/colour_words.py's held-out half (never tuned on): false captions contradicted, true ones not."""
    import colour_words

    items = [item for item in colour_words.labelled_set() if item["split"] == "held-out"]
    assert {item["category"] for item in items} == {"basic", "shade", "compound", "gem", "metal"}
    got = colour_words.scores(items, colour_words.verdicts(items), "held-out")
    assert got["recall"] >= 0.8 and got["false_alarms"] <= 0.05, got


def test_the_region_cap_figure_keeps_at_most_the_cap_and_covers_more_with_a_higher_one(capsys):
    """bench/region_cap.py's bookkeeping on one small photo: found is the uncapped count, kept never exceeds
    the cap or found, and a higher cap covers at least as much of the image."""
    import region_cap

    got = region_cap.bench_region_cap((4, 1000), photos=1, long_side=128)
    for min_area in region_cap.MIN_AREA_FRACS:
        low, high = got[min_area, 4], got[min_area, 1000]
        assert low["kept"] == 4 < high["kept"] == high["found"] and low["cut"] == 1 and high["cut"] == 0
        assert low["coverage"] < high["coverage"] <= 1.0
    assert "region cap (segment.max_regions), 1 sample photos at 128 px" in capsys.readouterr().out


def test_peak_rss_records_cpu_seconds_of_the_stage_and_its_children(tmp_path):
    """On a shared machine a stage's wall time follows the load; the scale figure compares CPU seconds, which
    ``peak_rss.py`` must count for the worker processes a stage starts too."""
    (tmp_path / "burn.py").write_text(
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'import time\\nt = time.process_time()\\n"
        "while time.process_time() - t < 0.3: pass'], check=True)\n")
    out = tmp_path / "burn.rss"
    subprocess.run([sys.executable, str(BENCH / "peak_rss.py"), str(out), "burn"], check=True,
                   env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert int(out.read_text()) > 0
    assert float(Path(f"{out}.seconds").read_text()) >= 0.3
    assert float(Path(f"{out}.cpu").read_text()) >= 0.3  # the child's CPU time, not only the parent's
