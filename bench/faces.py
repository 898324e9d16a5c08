"""The ``faces`` figure for ``bench/run.py``: the privacy pass's face detectors side by side (recall and false
positives on a small labelled set built from every face photo installed here), to pick ``redact.detectors``.

The set, all from installed packages (no download): the sample's astronaut and cameraman and matplotlib's
Grace Hopper, each hand-labelled, as they are and varied (downscaled to 1/2 and 1/4, mirrored, rotated
by 20 degrees either way, darkened, JPEG quality 20); the three pasted small (faces of 10-60 px) into a
1024 px launch-pad photo; scikit-image's ``lfw_subset`` (100 Labeled-Faces-in-the-Wild face crops and 100
non-face crops of 25 px, upscaled to 64 px and tiled in a grid); and the sample's ten photos without a
face. A face counts as found when one box covers at least half of it and is at most 4x its area; a box
that covers no labelled face by a third of its own area is a false positive.
"""

from __future__ import annotations

import io
import time

import matplotlib.cbook
import numpy as np
import skimage.data
from PIL import Image

from groundcap import params
from groundcap.annotators.registry import create
from groundcap.sources import sample
from timing import table

# photo -> the face in it (x, y, w, h), labelled by hand
FACES = {
    "astronaut.png": (180, 62, 90, 108),
    "camera.png": (196, 112, 56, 80),
    "grace_hopper.jpg": (172, 118, 190, 215),
}
LFW_SIDE, LFW_CELL, LFW_COLUMNS = 64, 96, 10
HAAR_FACE_CASCADES = ["frontalface_default", "profileface"]

Box = tuple[float, float, float, float]


def _photo(name: str) -> Image.Image:
    path = matplotlib.cbook.get_sample_data(name, asfileobj=False) if name == "grace_hopper.jpg" else \
        sample.data_dir() / name
    return Image.open(path).convert("RGB")


def _variants(image: Image.Image, face: Box) -> list[tuple[str, Image.Image, list[Box]]]:
    """The photo as it is and varied, each with where its face went."""
    x, y, w, h = face
    out = [("as is", image, [face])]
    for scale in (0.5, 0.25):
        size = (round(image.width * scale), round(image.height * scale))
        out.append((f"1/{round(1 / scale)}", image.resize(size, Image.Resampling.LANCZOS),
                    [(x * scale, y * scale, w * scale, h * scale)]))
    out.append(("mirrored", image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), [(image.width - x - w, y, w, h)]))
    for angle in (20, -20):  # about the centre; the face keeps its size around its rotated centre
        cx, cy = x + w / 2 - image.width / 2, y + h / 2 - image.height / 2
        a = np.deg2rad(angle)
        rx, ry = cx * np.cos(a) + cy * np.sin(a), -cx * np.sin(a) + cy * np.cos(a)
        out.append((f"rotated {angle}", image.rotate(angle, Image.Resampling.BILINEAR),
                    [(rx + image.width / 2 - w / 2, ry + image.height / 2 - h / 2, w, h)]))
    dark = (np.asarray(image, dtype=np.float64) * 0.35).astype(np.uint8)
    out.append(("dark", Image.fromarray(dark), [face]))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=20)
    out.append(("jpeg q20", Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), [face]))
    return out


def _launch_pad() -> tuple[Image.Image, list[Box]]:
    """The three photos pasted small into the rocket launch photo, upscaled to 1024 px."""
    canvas = _photo("rocket.jpg").resize((1024, 683), Image.Resampling.BILINEAR)
    boxes = []
    for k, (name, (x, y, w, h)) in enumerate(FACES.items()):
        image = _photo(name)
        for j, width in enumerate((160, 96)):
            scale = width / image.width
            small = image.resize((width, round(image.height * scale)), Image.Resampling.LANCZOS)
            left, top = 40 + k * 330 + j * 180, 60 + j * 300
            canvas.paste(small, (left, top))
            boxes.append((left + x * scale, top + y * scale, w * scale, h * scale))
    return canvas, boxes


def _lfw_grid(faces: bool) -> tuple[Image.Image, list[Box]]:
    crops = skimage.data.lfw_subset()[:100] if faces else skimage.data.lfw_subset()[100:]
    rows = -(-len(crops) // LFW_COLUMNS)
    canvas = Image.new("RGB", (LFW_COLUMNS * LFW_CELL, rows * LFW_CELL), (128, 128, 128))
    margin = (LFW_CELL - LFW_SIDE) // 2
    boxes = []
    for i, crop in enumerate(crops):
        tile = Image.fromarray((crop * 255).round().astype(np.uint8)).resize((LFW_SIDE, LFW_SIDE),
                                                                             Image.Resampling.BICUBIC)
        left, top = (i % LFW_COLUMNS) * LFW_CELL + margin, (i // LFW_COLUMNS) * LFW_CELL + margin
        canvas.paste(tile.convert("RGB"), (left, top))
        boxes.append((left, top, LFW_SIDE, LFW_SIDE))
    return canvas, boxes if faces else []


def labelled_set(quick: bool) -> list[tuple[str, Image.Image, list[Box]]]:
    """(group, image, face boxes) for every image of the set; ``quick``: one photo's variants and two negatives."""
    names = list(FACES)[:1] if quick else list(FACES)
    items = [(f"photos varied ({name})", image, boxes) for name in names
             for _, image, boxes in _variants(_photo(name), FACES[name])]
    if not quick:
        items.append(("small faces on a launch-pad photo", *_launch_pad()))
        items.append(("LFW face crops", *_lfw_grid(True)))
        items.append(("LFW non-face crops", *_lfw_grid(False)))
    negatives = [n for n in sample.IMAGES if n not in FACES][:2 if quick else None]
    items += [("sample photos without a face", _photo(n), []) for n in negatives]
    return items


def _overlap(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy


def score(found: list[Box], faces: list[Box]) -> tuple[int, int]:
    """(faces found, false positives) of one image's boxes."""
    hits = sum(any(_overlap(d, g) >= 0.5 * g[2] * g[3] and d[2] * d[3] <= 4 * g[2] * g[3] for d in found)
               for g in faces)
    false = sum(all(_overlap(d, g) < d[2] * d[3] / 3 for g in faces) for d in found)
    return hits, false


def detectors() -> dict[str, object]:
    """Haar with the face cascades the privacy pass ran before MTCNN, and MTCNN as the default params run it."""
    section = params.defaults()["redact"]
    haar = {**section["haar"], "cascades": HAAR_FACE_CASCADES}
    return {"haar": create("detector", "haar", haar), "mtcnn": create("detector", "mtcnn", section["mtcnn"])}


def bench_faces(quick: bool) -> None:
    items = labelled_set(quick)
    found, seconds = {}, {}
    for name, detector in detectors().items():
        start = time.perf_counter()
        found[name] = [[d.bbox for d in detector.detect(np.asarray(image), []) if d.label == "face"]
                       for _, image, _ in items]
        seconds[name] = (time.perf_counter() - start) / len(items)
    found["haar + mtcnn"] = [a + b for a, b in zip(found["haar"], found["mtcnn"], strict=True)]
    seconds["haar + mtcnn"] = seconds["haar"] + seconds["mtcnn"]
    groups = list(dict.fromkeys(group for group, _, _ in items))
    counts = {name: {g: np.zeros(3, dtype=np.int64) for g in groups} for name in found}  # found, false, faces
    for name, per_image in found.items():
        for (group, _, faces), boxes in zip(items, per_image, strict=True):
            counts[name][group] += (*score(boxes, faces), len(faces))
    print(f"faces: {len(items)} images, {sum(len(f) for _, _, f in items)} labelled faces; "
          "faces found / labelled (false positives), per detector")
    rows = [["group", *found]]
    rows += [[g, *(f"{c[g][0]}/{c[g][2]} ({c[g][1]} fp)" for c in counts.values())] for g in groups]
    totals = {name: sum(c.values()) for name, c in counts.items()}
    rows.append(["all: recall", *(f"{t[0] / max(1, t[2]):.2f} ({t[0]}/{t[2]})" for t in totals.values())])
    rows.append(["all: false positives", *(str(t[1]) for t in totals.values())])
    rows.append(["seconds per image", *(f"{seconds[n]:.2f}" for n in found)])
    table(rows)
