"""groundcap: build, check and release datasets of dense grounded captions."""

import os

# Fork safety, set before anything can import torch: vLLM forks its engine-core process unless CUDA is
# initialised, and a plain torch.cuda.is_available() initialises the CUDA driver (cudaGetDeviceCount), so
# the forked engine core fails ("Cannot re-initialize CUDA in forked subprocess"). With this set, torch
# asks NVML instead. vLLM sets it too, but only once imported (its env_override, vLLM PR #15951); every
# groundcap process (CLI, DVC stage, spawned worker, Ray actor) imports this package first, and children
# started from it inherit the variable.
os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"

__version__ = "0.1.0"
