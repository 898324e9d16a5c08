"""What the transformers backends share: device and dtype options, one load per process, inference.

Used by the annotator backends (``annotators.backends.hf_*``) and the VLM engine
(``vlm.hf_generate``), so it belongs to neither package.

torch and transformers are imported inside the functions: backend modules import this one at
module level, and the CPU install must list them without those libraries (``registry``).

Processors are built with the model's PIL image processor where it has one (SAM 2 has not), never
the torchvision one ``AutoProcessor`` picks where torchvision is installed: the same preprocessing
on every machine, so a record does not depend on which extras were installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from groundcap.errors import ParamsError
from groundcap.models import cached

DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(option: str) -> str:
    """``"auto"``: the GPU when there is one, else the CPU; anything else is a torch device string."""
    import torch

    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return option


def resolve_dtype(option: str, device: str, gpu_default: str = "bfloat16"):
    """``"auto"``: ``gpu_default`` on a GPU, float32 on the CPU (where half precision is slow or missing).

    bfloat16 rather than float16 by default: float16's narrow range overflows in SAM's and OWLv2's
    attention; a GPU without bfloat16 (before Ampere) gets float16 instead."""
    import torch

    if option == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        if gpu_default == "bfloat16" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return getattr(torch, gpu_default)
    if option not in DTYPES:
        raise ParamsError(f"dtype {option!r} is not one of auto, {', '.join(DTYPES)}")
    return getattr(torch, option)


class Loaded:
    """A pretrained model and its processor on one device, in one dtype.

    ``model_cls``, ``processor_cls`` and ``image_processor_cls`` are names in ``transformers``
    (resolved here, so backend modules need not import it); ``tokenizer`` adds the checkpoint's
    tokenizer to the processor.
    """

    def __init__(self, model_id: str, model_cls: str, processor_cls: str, image_processor_cls: str,
                 device: str = "auto", dtype: str = "auto", tokenizer: bool = False,
                 gpu_dtype: str = "bfloat16") -> None:
        import transformers

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, gpu_dtype)
        model_type = getattr(transformers, model_cls)
        self.model = cached(
            (model_cls, model_id, self.device, self.dtype),
            lambda: model_type.from_pretrained(model_id, dtype=self.dtype).to(self.device).eval(),
        )

        def processor():
            parts = {"image_processor": getattr(transformers, image_processor_cls).from_pretrained(model_id)}
            if tokenizer:
                parts["tokenizer"] = transformers.AutoTokenizer.from_pretrained(model_id)
            return getattr(transformers, processor_cls)(**parts)

        self.processor = cached((processor_cls, image_processor_cls, model_id), processor)

    def inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A processor's output on the model's device, its floating tensors in the model's dtype."""
        import torch

        def move(value):
            if not isinstance(value, torch.Tensor):
                return value
            return value.to(self.device, self.dtype) if torch.is_floating_point(value) else value.to(self.device)

        return {key: move(value) for key, value in batch.items()}


def inference(method: Callable) -> Callable:
    """Run ``method`` under ``torch.inference_mode`` (no autograd bookkeeping)."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return method(*args, **kwargs)

    return run


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` items, in order."""
    if size < 1:
        raise ParamsError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def xyxy_to_xywh(box) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (x0, y0, x1 - x0, y1 - y0)


def xywh_to_xyxy(box) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def local_config(model: str) -> Path | None:
    """``config.json`` of ``model`` on this machine (a local folder, or a Hub repo in the Hugging Face
    cache), never downloaded; None when it is not here."""
    path = Path(model) / "config.json"
    if path.is_file():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - not a repo id, no cache
        return None
    return Path(cached) if isinstance(cached, str) else None
