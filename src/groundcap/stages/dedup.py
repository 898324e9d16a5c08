"""Stage ``dedup``: near-duplicate images and captions, clustered (``work/dedup``, ``reports/dedup.json``).

Exact byte copies never get past ingest (``image_id`` hashes the bytes); here the same pixels in
another encoding (``pixel_hash``) and near-duplicates by perceptual hash (``qa.dedup``) form image
clusters, and near-duplicate scene captions of QA-passed images form caption clusters. Each
cluster's representative is the QA-passed image with the best score (then the smallest image_id);
``keep: one`` keeps only it. ``group`` joins both kinds of cluster: the split stage keeps a group in
one split, so no near-duplicate leaks across train/validation/test.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from groundcap import grounding, schema
from groundcap.errors import StageInputError
from groundcap.ingest import decode_rgb
from groundcap.params.validation import Enum, Int, Num
from groundcap.pipeline.stage import Context, Stage
from groundcap.qa import dedup
from groundcap.sources.reference import read_part
from groundcap.storage import atomic, parts


class DedupStage(Stage):
    name = "dedup"
    inputs = ("ingest", "qa")
    param_keys = ("dedup",)
    metrics = ("reports/dedup.json",)
    outs = ("work/dedup",)
    param_types = {"dedup": {
        "phash_max_distance": Int(0, 32),  # bits of 64
        "keep": Enum("one", "all"),
        "caption_min_jaccard": Num(0, 1, open_low=True),
        "caption_keep": Enum("one", "all"),
    }}

    def run(self, ctx: Context) -> None:
        section = ctx.params["dedup"]  # of param_types' types: checked when params load
        source = ctx.work("ingest")
        indices = parts.list_parts(source)
        ids, hashes, pixels, sizes = _hash_images(ctx, source, indices)
        qa_ids, passed, score, signatures = _qa_columns(ctx, indices)
        if qa_ids != ids:
            raise StageInputError("work/qa is out of step with work/ingest; rerun from ingest")
        n = len(ids)
        ids = np.asarray(ids, dtype=str)
        rank = _ranks(np.lexsort((ids, -score, ~passed)))  # QA-passed first, then higher score, then smaller id

        same_pixels = dedup.equal_pairs(np.asarray(pixels, dtype=str))
        near, _ = dedup.image_pairs(hashes, section["phash_max_distance"])
        image_edges = np.concatenate([same_pixels, near])
        image_rep = dedup.best_of(dedup.clusters(n, image_edges), rank)
        image_drop = (image_rep != np.arange(n)) & (section["keep"] == "one")

        caption_edges = dedup.caption_pairs(signatures, section["caption_min_jaccard"])
        caption_rep = dedup.best_of(dedup.clusters(n, caption_edges), _ranks(np.lexsort((rank, image_drop))))
        caption_drop = (caption_rep != np.arange(n)) & (section["caption_keep"] == "one") & ~image_drop

        group_rep = dedup.best_of(dedup.clusters(n, np.concatenate([image_edges, caption_edges])),
                                  _ranks(np.argsort(ids)))
        reasons = _reasons(ids, hashes, pixels, signatures, image_rep, image_drop, caption_rep, caption_drop)

        def row(i: int) -> dict:
            return {"image_id": str(ids[i]), "phash": int(hashes[i, 0]), "pixel_hash": pixels[i],
                    "image_cluster": str(ids[image_rep[i]]), "caption_cluster": str(ids[caption_rep[i]]),
                    "group": str(ids[group_rep[i]]), "kept": reasons[i] is None, "reason": reasons[i]}

        out = parts.reset_dir(ctx.work("dedup"))
        for index, start, stop in zip(indices, np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes), strict=True):
            parts.write_part([row(i) for i in range(start, stop)], schema.DEDUP, out, index)

        report = {
            "images": n,
            "exact_duplicates": n - len(set(pixels)),  # images whose pixels an earlier one already has
            "near_duplicate_clusters": _cluster_sizes(image_rep),
            "images_dropped": sum(r is not None for r in reasons),
            "caption_clusters": _cluster_sizes(caption_rep),
            "groups": _cluster_sizes(group_rep),
        }
        ctx.reports.mkdir(parents=True, exist_ok=True)
        atomic.write_text(ctx.reports / "dedup.json", json.dumps(report, indent=2, sort_keys=True) + "\n")


def _hash_images(ctx: Context, source, indices: list[int]) -> tuple[list[str], np.ndarray, list[str], list[int]]:
    """Perceptual and pixel hashes of every ingested image, one part in memory at a time."""
    total = sum(pq.ParquetFile(parts.part_path(source, i)).metadata.num_rows for i in indices)
    ids, hashes, pixels, sizes = [], [], [], []
    with tqdm(total=total, desc="dedup", unit="img", disable=not ctx.progress) as bar:
        for index in indices:
            rows = read_part(source, index, ["image_id", "bytes"], ctx.root).to_pylist()
            for row in rows:
                rgb = decode_rgb(row["bytes"])
                ids.append(row["image_id"])
                hashes.append(dedup.phashes(rgb))
                pixels.append(dedup.pixel_hash(rgb))
                bar.update(1)
            sizes.append(len(rows))
    width = 1 + len(dedup.OFFSETS) ** 2
    return ids, np.stack(hashes) if hashes else np.zeros((0, width), np.uint64), pixels, sizes


def _qa_columns(ctx: Context, indices: list[int]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Image ids, QA passed and score, and the MinHash signature of each passed scene caption, one
    part in memory at a time (a signature does not depend on the other texts)."""
    ids, passed, score, signatures = [], [], [], [dedup.minhash([])]
    for index in indices:
        rows = parts.read_part(ctx.work("qa"), index, ["image_id", "passed", "score", "scene_caption"])
        ids += [r["image_id"] for r in rows]
        passed += [bool(r["passed"]) for r in rows]
        score += [r["score"] or 0.0 for r in rows]
        signatures.append(dedup.minhash([grounding.plain(r["scene_caption"]) if r["passed"] and r["scene_caption"]
                                         else None for r in rows]))
    return ids, np.array(passed, dtype=bool), np.array(score, dtype=np.float64), np.concatenate(signatures)


def _ranks(order: np.ndarray) -> np.ndarray:
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _reasons(ids, hashes, pixels, signatures, image_rep, image_drop, caption_rep, caption_drop) -> list[str | None]:
    n = len(ids)
    # a member meets its representative through a chain of pairs; the reason names their own distance
    whole = np.minimum(dedup.distance(hashes[:, :1], hashes[image_rep]).min(axis=1),
                       dedup.distance(hashes[image_rep, :1], hashes).min(axis=1))
    similarity = dedup.jaccard(signatures, np.stack([np.arange(n), caption_rep], axis=1))
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(image_drop):
        rep = image_rep[i]
        reasons[i] = (f"same pixels as {ids[rep]}" if pixels[i] == pixels[rep]
                      else f"near-duplicate of {ids[rep]} (phash distance {whole[i]})")
    for i in np.flatnonzero(caption_drop):
        reasons[i] = f"near-duplicate caption of {ids[caption_rep[i]]} (estimated Jaccard {similarity[i]:.2f})"
    return reasons


def _cluster_sizes(rep: np.ndarray) -> dict:
    """Clusters of two or more images, and the largest one's size."""
    sizes = np.bincount(rep, minlength=1)
    count = int((sizes > 1).sum())
    return {"count": count, "largest": int(sizes.max()) if count else 0}


STAGE = DedupStage()
