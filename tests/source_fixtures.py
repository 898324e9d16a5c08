"""Small datasets in the shapes people keep them (WebDataset shards, a `datasets` folder, SA-1B, COCO),
written by the tests from scikit-image's photos: nothing is downloaded.

Given masks are drawn so that they never overlap and each covers a good share of its image, so the
entity resolution keeps them as they are (the tests compare them byte for byte).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from pycocotools import mask as coco_mask

SIZE = (96, 128)  # (h, w): small, so a full run stays quick


def photos() -> list[np.ndarray]:
    """Four distinct RGB photos at SIZE."""
    picks = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    return [np.asarray(Image.fromarray(p).resize((SIZE[1], SIZE[0]))) for p in picks]


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE (counts a str), as pycocotools writes it."""
    out = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in out["size"]], "counts": out["counts"].decode("ascii")}


def boxes_masks() -> list[np.ndarray]:
    """Two non-overlapping rectangles: the left third and a block at the bottom right."""
    h, w = SIZE
    left = np.zeros(SIZE, bool)
    left[:, : w // 3] = True
    block = np.zeros(SIZE, bool)
    block[h // 2:, 2 * w // 3:] = True
    return [left, block]


def write_webdataset(root: Path) -> str:
    """Two shards of two samples each (jpg + txt), the second also holding a corrupt png; returns the source."""
    import webdataset as wds

    root.mkdir(parents=True, exist_ok=True)
    images = photos()
    for shard in range(2):
        with wds.TarWriter(str(root / f"train-{shard:05d}.tar")) as sink:
            for k in range(2):
                sink.write({"__key__": f"{shard:02d}{k:04d}", "jpg": jpeg(images[2 * shard + k]),
                            "txt": f"sample {shard}/{k}"})
            if shard == 1:
                sink.write({"__key__": "broken", "png": b"\x89PNG not really"})
    return f"wds:{root}/train-{{00000..00001}}.tar"


def write_hf_folder(root: Path, image_column: str = "picture") -> str:
    """A `datasets` Parquet folder with an image column, a licence column and a card stating the dataset's
    licence (cc-by-sa-4.0); returns the source."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    images = photos()[:3]
    features = Features({image_column: ImageFeature(), "licence": Value("string"), "caption": Value("string")})
    ds = Dataset.from_dict({image_column: [{"bytes": jpeg(a), "path": None} for a in images],
                            "licence": ["cc-by-4.0", "cc-by-4.0", "cc0-1.0"],
                            "caption": ["a cat", "a cup", "a person"]}, features=features)
    (root / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    (root / "README.md").write_text("---\nlicense: cc-by-sa-4.0\n---\n# test images\n")  # the dataset's licence
    return f"hf:{root}?image={image_column}&license=licence"


def write_sa1b(root: Path) -> tuple[str, dict[str, list[dict]]]:
    """``sa_N.jpg`` + ``sa_N.json`` with SA-1B's keys, one jpg without its json; returns the source and
    the given RLEs per file name."""
    root.mkdir(parents=True, exist_ok=True)
    h, w = SIZE
    given = {}
    for n, arr in enumerate(photos()[:3], start=1):
        (root / f"sa_{n}.jpg").write_bytes(jpeg(arr))
        rles = [rle(m) for m in boxes_masks()]
        anns = [{"id": 100 * n + i, "segmentation": r, "bbox": coco_mask.toBbox(
            {"size": r["size"], "counts": r["counts"].encode()}).tolist(), "area": int(coco_mask.area(
                {"size": r["size"], "counts": r["counts"].encode()})), "predicted_iou": 0.95, "stability_score": 0.97,
                 "crop_box": [0, 0, w, h], "point_coords": [[10.0, 10.0]]} for i, r in enumerate(rles)]
        doc = {"image": {"image_id": n, "width": w, "height": h, "file_name": f"sa_{n}.jpg"}, "annotations": anns}
        (root / f"sa_{n}.json").write_text(json.dumps(doc))
        given[f"sa_{n}.jpg"] = rles
    (root / "sa_9.jpg").write_bytes(jpeg(photos()[3]))  # no sa_9.json: rejected with that reason
    return f"sa1b:{root}", given


def write_sa1b_tars(folder: Path, out: Path, json_first: bool = False) -> str:
    """The SA-1B folder as two plain tar shards (``./sa_N.jpg`` then ``./sa_N.json``, or the JSON first)."""
    import tarfile

    out.mkdir(parents=True, exist_ok=True)
    for n, stems in enumerate([["sa_1", "sa_2"], ["sa_3", "sa_9"]]):
        with tarfile.open(out / f"sa_{n:06d}.tar", "w") as tar:
            for stem in stems:
                for ext in ([".json", ".jpg"] if json_first else [".jpg", ".json"]):
                    if (folder / f"{stem}{ext}").exists():
                        tar.add(folder / f"{stem}{ext}", arcname=f"./{stem}{ext}")
    return f"sa1b:{out}/sa_{{000000..000001}}.tar"


def write_coco(root: Path) -> tuple[str, dict[str, list[dict]]]:
    """instances.json + images/: per image a polygon instance (left third) and an RLE instance (bottom
    right block); an uncompressed crowd RLE on the third image. Returns the source and, per file, the
    given compressed RLEs (the polygon rasterized by pycocotools)."""
    h, w = SIZE
    (root / "images").mkdir(parents=True, exist_ok=True)
    left, block = boxes_masks()
    polygon = [0.0, 0.0, w / 3 - 1, 0.0, w / 3 - 1, h - 1.0, 0.0, h - 1.0]
    poly_rle = coco_mask.merge(coco_mask.frPyObjects([polygon], h, w))
    poly_rle = {"size": [h, w], "counts": poly_rle["counts"].decode("ascii")}
    doc = {"info": {"description": "groundcap test"}, "licenses": [
        {"id": 1, "name": "Attribution License", "url": "http://creativecommons.org/licenses/by/2.0/"},
        {"id": 2, "name": "Public Domain", "url": ""}],
        "categories": [{"id": 1, "name": "cat", "supercategory": "animal"},
                       {"id": 2, "name": "box", "supercategory": "thing"}],
        "images": [], "annotations": []}
    given = {}
    for n, arr in enumerate(photos()[:3], start=1):
        name = f"{n:012d}.jpg"
        (root / "images" / name).write_bytes(jpeg(arr))
        doc["images"].append({"id": n, "file_name": name, "width": w, "height": h, "license": 1 if n < 3 else 2})
        block_rle = rle(block)
        doc["annotations"] += [
            {"id": 10 * n, "image_id": n, "category_id": 1, "segmentation": [polygon], "iscrowd": 0},
            {"id": 10 * n + 1, "image_id": n, "category_id": 2, "segmentation": block_rle, "iscrowd": 0},
        ]
        given[name] = [poly_rle, block_rle]
    # the third image's box as an uncompressed crowd RLE (counts a list, as COCO stores crowds)
    runs = coco_mask.decode({"size": [h, w], "counts": given[f"{3:012d}.jpg"][1]["counts"].encode()})
    flat = runs.flatten(order="F")
    change = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))
    counts = np.diff(np.concatenate(([0], change))).tolist()
    doc["annotations"][-1]["segmentation"] = {"size": [h, w], "counts": counts}
    doc["annotations"][-1]["iscrowd"] = 1
    (root / "instances.json").write_text(json.dumps(doc))
    return f"coco:{root}/instances.json?images={root}/images", given


def sample_folder(folder: Path, count: int) -> Path:
    """A folder source holding the first ``count`` bundled sample photos, as they are."""
    from groundcap.sources import sample

    folder.mkdir(parents=True)
    for path in sample.paths()[:count]:
        (folder / path.name).write_bytes(path.read_bytes())
    return folder
