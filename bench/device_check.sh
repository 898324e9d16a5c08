#!/usr/bin/env bash
# The GPU profile's device check: bench/gpu.py at real size on one lent GPU, its figures as JSON in $OUT.
#
# The device machine reaches no package index, and of what bench/gpu.py imports its image lacks only
# pycocotools (it has torch with CUDA, transformers, numpy, Pillow, OpenCV, scikit-image). So, here, once:
#     bench/device_check.sh fetch      # a 0.4 MB wheel into .whl/ (ignored by git)
# then one device run that carries it; its 600 s leave a minute past the bench's own limit (540 s), and the
# JSON is rewritten after every step, so a run cut short still brings back what it measured:
#     run(command="bench/device_check.sh", carry=[".whl"], timeout_s=600)
# Any other arguments go to bench/gpu.py. GPU_CHECK_SCALE=tiny and PYTHON=... run the same script on a CPU
# (tests/test_bench_tools.py does); GPU_CHECK_TIMEOUT changes the bench's limit.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if [[ ${1:-} == fetch ]]; then  # the device's python3 is CPython 3.12 on x86-64
    exec "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl pycocotools==2.0.11
fi

out=${OUT:?set OUT to the folder the figures go to}
if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH=$site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
"$python" -c "import pycocotools" || { echo "no pycocotools: run 'bench/device_check.sh fetch' here and carry .whl" >&2
                                       exit 2; }
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
timeout -k 10 "${GPU_CHECK_TIMEOUT:-540}" "$python" bench/gpu.py --scale "${GPU_CHECK_SCALE:-real}" \
    --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
