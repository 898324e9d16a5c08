"""Per-split statistics for the card, computed from the release's own Parquet files.

Reading what was released (not the stage tables) means the card describes exactly what users
download. Only metadata columns are read, never the image bytes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from groundcap import grounding

TOP_LABELS = 10


def shard_files(release_dir: Path, directory: str, split: str) -> list[Path]:
    return sorted((Path(release_dir) / directory).glob(f"{split}-*.parquet"))


def parquet_sizes(files: list[Path]) -> tuple[int, int, int]:
    """(rows, bytes on disk, uncompressed bytes) of Parquet files, from their footers."""
    rows = size = uncompressed = 0
    for file in files:
        meta = pq.read_metadata(file)
        rows += meta.num_rows
        size += file.stat().st_size
        uncompressed += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return rows, size, uncompressed


def _word_counts(texts: pl.Series) -> pl.Series:
    return texts.str.count_matches(r"\S+")


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def split_stats(release_dir: Path, split: str) -> dict:
    """Images, regions, regions per image, caption lengths (words), top labels, region sources, regions per
    granularity (stuff, object, part) and the share of each image its entities cover, of one split.

    Shard by shard, so memory is bounded by one shard's metadata however large the split.
    """
    images = regions = refs = 0
    sizes: list[int] = []  # regions per image: one int per image is small even at millions
    words = dict.fromkeys(["short_caption", "detailed_caption", "scene_caption"], 0)
    labels: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    granularity: Counter[str] = Counter()
    covered: list[float] = []  # per image, like sizes
    for file in shard_files(release_dir, "data", split):
        table = pl.read_parquet(file, columns=["regions", "scene_caption", "width", "height"])
        covered += _coverage(table).to_list()
        scene = table["scene_caption"].to_list()
        flat = table.select(pl.col("regions").explode().struct.unnest()).drop_nulls("region_id")
        images += table.height
        regions += flat.height
        sizes += table["regions"].list.len().to_list()
        refs += sum(len(grounding.references(text)) for text in scene)
        plain = pl.Series([grounding.plain(text) for text in scene], dtype=pl.String)
        words["scene_caption"] += int(_word_counts(plain).sum())
        for field in ("short_caption", "detailed_caption"):
            words[field] += int(_word_counts(flat[field]).sum())
        labels.update(flat["label"].to_list())
        sources.update(flat["source"].to_list())
        granularity.update(flat["granularity"].to_list())
    per_region = {"short_caption": regions, "detailed_caption": regions, "scene_caption": images}
    return {
        "images": images,
        "regions": regions,
        "regions_per_image": {
            "mean": _mean(regions, images),
            "min": min(sizes, default=None),
            "max": max(sizes, default=None),
        },
        "words": {field: _mean(total, per_region[field]) for field, total in words.items()},
        "references_per_scene_caption": _mean(refs, images),
        "top_labels": sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_LABELS],
        "region_sources": dict(sorted(sources.items())),  # regions per `source` (segmenter, or given:<kind>)
        "granularity": {g: granularity[g] for g in ("stuff", "object", "part")},
        "coverage": {"mean": _mean(sum(covered), images), "median": _median(covered),
                     "min": min(covered, default=None)},
    }


def _coverage(table: pl.DataFrame) -> pl.Series:
    """Each image's share of pixels its entities (stuff and object regions) cover, as ``qa.checks.coverage``
    measures it: entities never overlap, parts lie inside theirs."""
    entity_area = pl.col("regions").list.eval(
        pl.when(pl.element().struct.field("granularity") != "part").then(pl.element().struct.field("area"))
        .otherwise(0)).list.sum()
    return table.select((entity_area / (pl.col("width") * pl.col("height"))).clip(upper_bound=1.0)).to_series()


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def redaction_stats(release_dir: Path, splits) -> dict:
    """What the privacy pass blurred in the released images (their ``redactions`` column): images with a
    blurred box, boxes per label, and the detectors that found them."""
    images = 0
    labels: Counter[str] = Counter()
    detectors: set[str] = set()
    for split in splits:
        for file in shard_files(release_dir, "data", split):
            column = pl.read_parquet(file, columns=["redactions"])["redactions"]
            images += int((column.list.len() > 0).sum())
            flat = column.explode().drop_nulls()
            if len(flat):
                boxes = flat.struct.unnest()
                labels.update(boxes["label"].to_list())
                detectors.update(boxes["detector"].to_list())
    return {"images": images, "boxes": dict(sorted(labels.items())), "detectors": sorted(detectors)}
