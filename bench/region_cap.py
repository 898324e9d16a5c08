"""The ``region-cap`` figure for ``bench/run.py``: what ``segment.max_regions`` keeps and costs, to set it.

SA-1B images carry about 100 masks. Stand-in here, with no SAM weights on this machine: the first 6 sample
photos scaled to SA-1B's size (2250 px the long side), each cut by the CPU mask generator at a fine scale
into 34-192 candidate masks (about 130 an image). Per ``segment.min_area_frac`` (the default 0.005, which
drops masks under 0.5% of the image before any cap, and 0.001) and cap: the entities the resolution finds
with no cap (``found``) and keeps (``kept``), the images the cap cuts, the share of the pixels the kept
entities cover, and the seconds per image of the resolution plus the CPU stand-in's region captions (the
step the cap multiplies). The GPU profile's VLM requests per image follow from ``kept``: short, detailed,
verifier and the cross-check's two, 5 a region (an estimate: no VLM runs here). Opt-in (``--only
region-cap``): about 15 minutes on 2 cores.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from groundcap import params
from groundcap.annotators.entities import resolve_entities
from groundcap.annotators.registry import create
from groundcap.sources import sample
from timing import table

LONG_SIDE = 2250  # SA-1B's images: 1500 x 2250
FINE = {"scale": 50, "min_size_frac": 0.001}  # felzenszwalb at SAM-like density
MIN_AREA_FRACS = (0.005, 0.001)
VLM_REQUESTS_PER_REGION = 5


def _photos(n: int, long_side: int) -> list[np.ndarray]:
    out = []
    for path in sample.paths()[:n]:
        img = Image.open(path).convert("RGB")
        scale = long_side / max(img.size)
        out.append(np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)))
    return out


def bench_region_cap(caps: tuple[int, ...], photos: int, long_side: int = LONG_SIDE) -> dict[tuple[float, int], dict]:
    """Print and return, per (min_area_frac, cap), found / kept entities, images cut, coverage and s/image."""
    section = params.defaults()["segment"]
    entity = {k: section[k] for k in ("nms_iou", "min_predicted_iou", "min_stability")}
    captioner = create("region_captioner", "attributes", {})
    generator = create("mask_generator", "felzenszwalb", FINE)
    images = _photos(photos, long_side)
    candidates = [generator.generate(image) for image in images]
    rows = [["min_area_frac", "cap", "candidates/img", "found/img", "kept/img", "images cut", "coverage", "s/img",
             f"VLM requests/img (est., {VLM_REQUESTS_PER_REGION}/region)"]]
    out = {}
    for min_area in MIN_AREA_FRACS:
        found = [len(resolve_entities([], c, *image.shape[:2], min_area_frac=min_area, max_regions=10**6, **entity))
                 for image, c in zip(images, candidates, strict=True)]
        for cap in caps:
            kept, covered, start = [], [], time.perf_counter()
            for image, cands in zip(images, candidates, strict=True):
                h, w = image.shape[:2]
                regions = resolve_entities([], cands, h, w, min_area_frac=min_area, max_regions=cap, **entity)
                captioner.caption(image, regions)
                kept.append(len(regions))
                covered.append(sum(r["area"] for r in regions) / (h * w))
            seconds = (time.perf_counter() - start) / len(images)
            out[min_area, cap] = {"found": float(np.mean(found)), "kept": float(np.mean(kept)),
                                  "cut": sum(f > cap for f in found), "coverage": float(np.mean(covered)),
                                  "s_per_image": seconds}
            rows.append([str(min_area), str(cap), f"{np.mean([len(c) for c in candidates]):.0f}",
                         f"{np.mean(found):.1f}", f"{np.mean(kept):.1f}", f"{out[min_area, cap]['cut']}/{len(images)}",
                         f"{np.mean(covered):.3f}", f"{seconds:.2f}", f"{VLM_REQUESTS_PER_REGION * np.mean(kept):.0f}"])
    print(f"region cap (segment.max_regions), {len(images)} sample photos at {long_side} px, SAM-like candidates:")
    table(rows)
    return out
