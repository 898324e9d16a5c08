"""Loaded models, one per key per process, and their release between stages.

Every loader (transformers models and processors, VLM chat engines, the sentence embedder) goes
through ``cached``, so a stage that builds a backend twice loads it once, and ``release`` can free
them all when a stage ends: under the GPU profile the next stage needs that GPU memory. A model the
next stage would load again with the same options (the scene captioner after the region
captioner) is kept by passing its key in ``keep``.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Hashable, Iterable
from typing import Any

_LOADED: dict[Hashable, Any] = {}


def cached(key: Hashable, make: Callable[[], Any]) -> Any:
    """``make()`` once per process for ``key``."""
    if key not in _LOADED:
        _LOADED[key] = make()
    return _LOADED[key]


def loaded() -> list[Hashable]:
    """Keys of the models loaded in this process."""
    return list(_LOADED)


def release(keep: Iterable[Hashable] = ()) -> list[Hashable]:
    """Free every loaded model whose key is not in ``keep`` (``close()`` first where it has one, then
    ``gc`` and the CUDA cache); the keys freed."""
    keep = set(keep)
    freed = [key for key in _LOADED if key not in keep]
    for key in freed:
        close = getattr(_LOADED.pop(key), "close", None)
        if callable(close):
            close()
    if freed:
        gc.collect()
        torch = sys.modules.get("torch")  # only if a model brought it in
        if torch is not None:
            torch.cuda.empty_cache()  # a no-op unless CUDA is initialised: it never initialises it
    return freed
