"""The ``sources`` figure for ``bench/run.py``: ingest's peak RSS from each packed or annotated source kind
(WebDataset shards, a Parquet ``datasets`` folder, SA-1B tars, a COCO file) at N and 10N images.

The images are distinct synthetic pictures (random blocks upscaled, 384x288 JPEG); SA-1B and COCO
images each carry 24 non-overlapping RLE masks. ``groundcap ingest`` runs as its own process through
``peak_rss.py`` (``pipeline.run_stages``), so each figure is that process's own high-water mark; a
source that streams shows the same peak at 10N as at N.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from pipeline import run_stages  # bench/pipeline.py, beside this file
from timing import table

H, W, MASKS, PER_SHARD = 288, 384, 24, 100


def _jpeg(k: int) -> bytes:
    rng = np.random.default_rng(k)
    small = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((W, H), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _rles(masks: int = MASKS) -> list[dict]:
    """``masks`` horizontal bands covering the image, as SA-1B stores masks (compressed RLE strings)."""
    out = []
    for i in range(masks):
        m = np.zeros((H, W), np.uint8, order="F")
        m[i * H // masks:(i + 1) * H // masks] = 1
        r = coco_mask.encode(m)
        out.append({"size": [H, W], "counts": r["counts"].decode("ascii")})
    return out


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_wds(root: Path, n: int) -> str:
    root.mkdir(parents=True)
    for shard in range(0, n, PER_SHARD):
        with tarfile.open(root / f"train-{shard // PER_SHARD:05d}.tar", "w") as tar:
            for k in range(shard, min(n, shard + PER_SHARD)):
                _tar_add(tar, f"{k:08d}.jpg", _jpeg(k))
                _tar_add(tar, f"{k:08d}.txt", b"a caption")
    return f"wds:{root}/train-{{00000..{(n - 1) // PER_SHARD:05d}}}.tar"


def write_hf(root: Path, n: int) -> str:
    from datasets import Dataset, Features, Value, disable_progress_bars
    from datasets import Image as ImageFeature

    disable_progress_bars()

    (root / "data").mkdir(parents=True)
    features = Features({"image": ImageFeature(), "license": Value("string")})
    shards = range(0, n, PER_SHARD)
    for i, shard in enumerate(shards):
        ks = range(shard, min(n, shard + PER_SHARD))
        rows = {"image": [{"bytes": _jpeg(k), "path": None} for k in ks], "license": ["cc-by-4.0"] * len(ks)}
        path = root / "data" / f"train-{i:05d}-of-{len(shards):05d}.parquet"
        Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return f"hf:{root}?license=license"


def write_sa1b(root: Path, n: int, masks: int = MASKS) -> str:
    root.mkdir(parents=True)
    anns = [{"id": i, "segmentation": r, "bbox": [0, 0, W, H / masks], "area": W * H // masks,
             "predicted_iou": 0.9, "stability_score": 0.95, "crop_box": [0, 0, W, H], "point_coords": [[1.0, 1.0]]}
            for i, r in enumerate(_rles(masks))]
    for shard in range(0, n, PER_SHARD):
        with tarfile.open(root / f"sa_{shard // PER_SHARD:06d}.tar", "w") as tar:
            for k in range(shard, min(n, shard + PER_SHARD)):
                image = {"image_id": k, "width": W, "height": H, "file_name": f"sa_{k}.jpg"}
                doc = {"image": image, "annotations": anns}
                _tar_add(tar, f"./sa_{k}.jpg", _jpeg(k))
                _tar_add(tar, f"./sa_{k}.json", json.dumps(doc).encode())
    return f"sa1b:{root}/sa_{{000000..{(n - 1) // PER_SHARD:06d}}}.tar"


def write_coco(root: Path, n: int) -> str:
    (root / "images").mkdir(parents=True)
    rles = _rles()
    doc = {"licenses": [{"id": 1, "name": "CC BY 2.0"}], "categories": [{"id": 1, "name": "band"}], "images": [],
           "annotations": []}
    for k in range(n):
        (root / "images" / f"{k:012d}.jpg").write_bytes(_jpeg(k))
        doc["images"].append({"id": k, "file_name": f"{k:012d}.jpg", "width": W, "height": H, "license": 1})
        doc["annotations"] += [{"id": k * MASKS + i, "image_id": k, "category_id": 1, "segmentation": r, "iscrowd": 0}
                               for i, r in enumerate(rles)]
    (root / "instances.json").write_text(json.dumps(doc))
    return f"coco:{root}/instances.json?images={root}/images"


KINDS = {"wds": write_wds, "hf": write_hf, "sa1b": write_sa1b, "coco": write_coco}


def bench_sources(tmp: Path, n: int, factor: int = 10) -> None:
    """Ingest's peak RSS per source kind at ``n`` and ``factor * n`` images."""
    rows = [["source", f"RSS {n} MB", f"RSS {factor * n} MB", "ratio", f"s/img {factor * n}"]]
    for kind, write in KINDS.items():
        runs = []
        for size in (n, factor * n):
            root = tmp / f"sources-{kind}-{size}"
            params_file = tmp / f"sources-{kind}-{size}.yaml"
            # reference: SA-1B's terms keep its images out of an embedded release (ingest refuses them)
            run_params = {"source": write(root / "data", size), "release": {"images": "reference"}}
            params_file.write_text(json.dumps(run_params))
            runs.append(run_stages(root, params_file, ["ingest"])[0])
        small, big = runs
        rows.append([kind, f"{small.maxrss_mb:.0f}", f"{big.maxrss_mb:.0f}", f"{big.maxrss_mb / small.maxrss_mb:.2f}x",
                     f"{big.seconds / (factor * n):.4f}"])
    print(f"ingest peak RSS per source kind, {n} vs {factor * n} images ({W}x{H} JPEG; SA-1B and COCO with "
          f"{MASKS} RLE masks per image), ingest its own process:")
    table(rows)
