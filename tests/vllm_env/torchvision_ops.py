"""Lets PyPI's torchvision import beside CPU torch in .venv-vllm (installed there as a ``.pth`` by ``make``).

PyPI's torchvision wheels for torch 2.13 link CUDA (``libtorch_cuda.so``), so beside ``torch==2.13.0+cpu``
their C extension fails to load, no ``torchvision::`` operator is defined, and ``import torchvision``
(which vLLM does) then dies in ``torchvision/_meta_registrations.py``: ``register_fake("torchvision::nms")``
on an operator that does not exist. No CPU torchvision for torch 2.13 is on PyPI (the CPU builds live on
download.pytorch.org, which CI does not reach), so this defines the two schemas that module registers
unconditionally, with the signatures of torchvision's C++ ops, before torchvision loads. The ops have no
kernels: calling them fails, and neither vLLM's CPU path nor groundcap calls them.

The ``.pth`` imports this module at every interpreter start, vLLM's spawned engine process included; it
only adds a finder to ``sys.meta_path`` (torch is imported when ``torchvision`` is, not before).
"""

from __future__ import annotations

import sys

SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # the torch.library.Library must stay alive, or its definitions go with it


def define_schemas() -> None:
    """Define the ``torchvision::`` schemas that are missing (none when torchvision's own ops loaded)."""
    global _library
    import torch

    for schema in SCHEMAS:
        name = schema.split("(", 1)[0]
        try:
            getattr(torch.ops.torchvision, name)
            continue  # torchvision's C extension (a CPU build) defined it
        except (AttributeError, RuntimeError):
            pass
        if _library is None:
            _library = torch.library.Library("torchvision", "DEF")
        _library.define(schema)


class _BeforeTorchvision:
    """A ``sys.meta_path`` finder that finds nothing: it defines the schemas the first time
    ``torchvision`` is imported, then steps aside for the ordinary finders."""

    done = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "torchvision" and not cls.done:
            cls.done = True
            define_schemas()
        return None


def install() -> None:
    if not any(finder is _BeforeTorchvision for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision)


install()
