"""Benchmarks, each measured side by side with its baseline in one run (this machine is shared and noisy).

    make bench            # or: .venv/bin/python bench/run.py [--quick]

Prints one line per figure with the ratio. Figures so far:
- mask IoU: pairwise IoU of 100 masks on an SA-1B-sized image, RLE (pycocotools) vs dense;
- mask post-processing per image: NMS + resolution into non-overlapping entities
  (``annotators.entities``) of 100 and 300 SAM-like masks on an SA-1B-sized image, RLE vs the same
  algorithm on dense boolean arrays (results checked equal);
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
from groundcap.annotators.base import Mask
from groundcap.annotators.entities import resolve_entities


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sam_like(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """n random ellipses, as dense HxW masks: from 0.04% to 20% of the image (median about 4%)."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((n, h, w), dtype=bool)
    yy, xx = np.ogrid[:h, :w]
    for i in range(n):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(20, h // 4), rng.integers(20, w // 4)
        dense[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return dense


def bench_masks(n: int, h: int, w: int, repeat: int) -> None:
    dense = sam_like(n, h, w)
    rles = [masks.encode(m) for m in dense]

    def rle_iou():
        return masks.iou(rles, rles)

    np.testing.assert_allclose(rle_iou(), dense_iou(dense), atol=1e-5)
    t_rle, t_dense = _best(rle_iou, repeat), _best(lambda: dense_iou(dense), repeat)
    print(f"mask IoU, {n} masks {h}x{w}: RLE {t_rle * 1e3:.1f} ms, dense {t_dense * 1e3:.1f} ms, "
          f"dense/RLE = {t_dense / t_rle:.1f}x")


def dense_iou(dense: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Pairwise IoU of dense masks by float32 matmul, in chunks so memory stays bounded."""
    n = len(dense)
    flat = dense.reshape(n, -1)
    area = flat.sum(1).astype(np.float64)
    inter = np.zeros((n, n))
    for i in range(0, n, chunk):
        a = flat[i:i + chunk].astype(np.float32)
        for j in range(0, n, chunk):
            inter[i:i + chunk, j:j + chunk] = a @ flat[j:j + chunk].astype(np.float32).T
    return inter / np.maximum(area[:, None] + area[None, :] - inter, 1)


def dense_resolve(dense: np.ndarray, scores: list[float], nms_iou: float, min_area: float, min_keep: float) -> list[dict]:
    """``resolve_entities`` for generated masks, on dense arrays: the baseline it replaces."""
    ious = dense_iou(dense)
    kept: list[int] = []
    for i in sorted(range(len(dense)), key=lambda i: (-scores[i], i)):
        if all(ious[i, j] <= nms_iou for j in kept):
            kept.append(i)
    areas = dense.reshape(len(dense), -1).sum(1)
    taken = np.zeros(dense.shape[1:], dtype=bool)
    out = []
    for i in sorted(kept, key=lambda i: (-areas[i], i)):
        rest = dense[i] & ~taken
        rest_area = int(rest.sum())
        if rest_area < min_area or rest_area < min_keep * areas[i]:
            continue
        out.append(masks.encode(rest))  # the records hold RLE either way
        taken |= rest
    return out


def bench_postprocess(n: int, h: int, w: int, repeat: int) -> None:
    dense = sam_like(n, h, w, seed=n)
    scores = [float(s) for s in np.random.default_rng(1).random(n)]
    cands = [Mask(masks.encode(m), "", s, "bench") for m, s in zip(dense, scores)]
    min_area = 0.0005 * h * w

    def rle_path():
        return resolve_entities([], cands, h, w, min_area_frac=0.0005, nms_iou=0.7, max_regions=n)

    def dense_path():
        return dense_resolve(dense, scores, 0.7, min_area, 0.5)

    assert [r["segmentation"] for r in rle_path()] == dense_path(), "RLE and dense paths disagree"
    t_rle, t_dense = _best(rle_path, repeat), _best(dense_path, repeat)
    print(f"mask post-processing, {n} masks {h}x{w}: RLE {t_rle * 1e3:.0f} ms/img, dense {t_dense * 1e3:.0f} ms/img, "
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
        bench_postprocess(20, 300, 400, repeat=1)
        bench_ingest(2, repeat=1)
    else:
        bench_masks(100, 1500, 2250, repeat=3)
        for n in (100, 300):
            bench_postprocess(n, 1500, 2250, repeat=3)
        bench_ingest(25, repeat=3)


if __name__ == "__main__":
    main()
