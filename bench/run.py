"""Benchmarks, each measured side by side with its baseline in one run (this machine is shared and noisy).

    make bench            # or: .venv/bin/python bench/run.py [--quick]

Prints one line per figure with the ratio. Figures so far:
- mask post-processing: pairwise IoU of 100 masks on an SA-1B-sized image, RLE (pycocotools) vs dense;
- ingest: validate + normalize + hash per image vs a plain Pillow decode loop over the same files.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import skimage.data
from PIL import Image

from groundcap import ingest, masks, params


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_masks(n: int, h: int, w: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    dense = np.zeros((n, h, w), dtype=bool)
    for i in range(n):  # random boxes and ellipses, like SAM's everything masks
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(20, h // 4), rng.integers(20, w // 4)
        yy, xx = np.ogrid[:h, :w]
        dense[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    rles = [masks.encode(m) for m in dense]

    def rle_iou():
        return masks.iou(rles, rles)

    def dense_iou():
        flat = dense.reshape(n, -1).astype(np.float32)
        inter = flat @ flat.T
        area = flat.sum(1)
        return inter / (area[:, None] + area[None, :] - inter)

    np.testing.assert_allclose(rle_iou(), dense_iou(), atol=1e-5)
    t_rle, t_dense = _best(rle_iou, repeat), _best(dense_iou, repeat)
    print(f"mask IoU, {n} masks {h}x{w}: RLE {t_rle * 1e3:.1f} ms, dense {t_dense * 1e3:.1f} ms, "
          f"dense/RLE = {t_dense / t_rle:.1f}x")


def bench_ingest(copies: int, repeat: int) -> None:
    files = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buf, format="JPEG", quality=90)
        files += [buf.getvalue()] * copies
    limits = ingest.Limits.from_params(params.defaults()["ingest"])

    def groundcap_ingest():
        for data in files:
            ingest.image_id(ingest.validate(data, limits)["bytes"])

    def pillow_decode():
        for data in files:
            with Image.open(io.BytesIO(data)) as img:
                img.convert("RGB")

    t_ours, t_pil = _best(groundcap_ingest, repeat), _best(pillow_decode, repeat)
    n = len(files)
    print(f"ingest, {n} JPEGs on 1 core: groundcap {n / t_ours:.0f} img/s, Pillow decode {n / t_pil:.0f} img/s, "
          f"groundcap/Pillow = {t_pil / t_ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        bench_masks(20, 300, 400, repeat=2)
        bench_ingest(2, repeat=1)
    else:
        bench_masks(100, 1500, 2250, repeat=3)
        bench_ingest(25, repeat=3)


if __name__ == "__main__":
    main()
