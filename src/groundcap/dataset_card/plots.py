"""The dataset card's plots: regions per image, caption lengths and QA scores, per split, as PNG files.

The card links them (``plots/*.png`` in the release folder). They are computed from the released
Parquet files, like the card's statistics, so they show what users download. The bins are fixed in
advance: counts accumulate shard by shard in memory bounded by the bin count however large a split
is, and the same release always gives the same counts and, rendered with fixed sizes and without
time or version metadata, the same PNG bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.style
import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from groundcap import grounding
from groundcap.dataset_card.stats import _word_counts, shard_files
from groundcap.storage import atomic

PLOTS_DIR = "plots"
PLOT_FILES = ("regions_per_image.png", "caption_words.png", "qa_scores.png")

# regions per image: one bin per count 0..63, then one overflow bin for 64 or more (the default
# segmentation keeps at most 24 entities; parts can add more)
REGIONS_OVERFLOW = 64
# caption length in words: (bin width, overflow from); bins [k*width, (k+1)*width), then ">= overflow"
WORD_BINS = {"short_caption": (1, 32), "detailed_caption": (4, 160), "scene_caption": (8, 320)}
CAPTION_FIELDS = tuple(WORD_BINS)
# qa_score in [0, 1]: 20 bins of 0.05, [0, 0.05) .. [0.95, 1.0] (1.0 counts in the last bin)
QA_BINS = 20
# qa_score is float32: 0.7 is stored as 0.69999999; this slack puts a score within 5e-6 below an edge
# in the bin the edge opens, as its author meant. Out-of-range scores are clipped to the end bins.
_QA_SLACK = 1e-4

FIGSIZE = {"regions_per_image.png": (8.0, 4.5), "caption_words.png": (15.0, 4.5), "qa_scores.png": (8.0, 4.5)}
DPI = 100
_TITLES = {"short_caption": "short caption", "detailed_caption": "detailed caption", "scene_caption": "scene caption"}


def _bincount(indices: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(indices, minlength=size)[:size]


def _word_bins(words: pl.Series, field: str) -> np.ndarray:
    width, overflow = WORD_BINS[field]
    size = overflow // width + 1
    counts = words.drop_nulls().to_numpy().astype(np.int64)
    return _bincount(np.minimum(counts // width, size - 1), size)


def qa_bin(scores: np.ndarray) -> np.ndarray:
    """The qa_score bin (0..19) of each finite score."""
    bins = np.floor(np.asarray(scores, dtype=np.float64) * QA_BINS + _QA_SLACK)
    return np.clip(bins, 0, QA_BINS - 1).astype(np.int64)


def _split_histograms(release_dir: Path, split: str) -> dict:
    images = regions = missing_qa = 0
    per_image = np.zeros(REGIONS_OVERFLOW + 1, dtype=np.int64)
    words = {field: np.zeros(WORD_BINS[field][1] // WORD_BINS[field][0] + 1, dtype=np.int64) for field in WORD_BINS}
    qa = np.zeros(QA_BINS, dtype=np.int64)
    for file in shard_files(release_dir, "data", split):
        table = pl.read_parquet(file, columns=["regions", "scene_caption", "qa_score"])
        if not table.height:
            continue
        images += table.height
        sizes = table["regions"].list.len().fill_null(0).to_numpy().astype(np.int64)
        regions += int(sizes.sum())
        per_image += _bincount(np.minimum(sizes, REGIONS_OVERFLOW), REGIONS_OVERFLOW + 1)
        flat = table.select(pl.col("regions").explode().struct.unnest()).drop_nulls("region_id")
        for field in ("short_caption", "detailed_caption"):
            words[field] += _word_bins(_word_counts(flat[field]), field)
        scene = [None if text is None else grounding.plain(text) for text in table["scene_caption"].to_list()]
        words["scene_caption"] += _word_bins(_word_counts(pl.Series(scene, dtype=pl.String)), "scene_caption")
        scores = table["qa_score"].cast(pl.Float64).to_numpy()
        finite = np.isfinite(scores)  # nulls read as NaN
        missing_qa += int((~finite).sum())
        qa += _bincount(qa_bin(scores[finite]), QA_BINS)
    return {
        "images": images,
        "regions": regions,
        "regions_per_image": per_image.tolist(),
        "words": {field: counts.tolist() for field, counts in words.items()},
        "qa_score": qa.tolist(),
        "qa_score_missing": missing_qa,
    }


def histograms(release_dir: Path, splits: Sequence[str]) -> dict:
    """Fixed-bin counts per non-empty split, read shard by shard from ``data/``.

    Returns ``{"bins": ..., "splits": {split: counts}}`` of plain ints and lists. Per split:
    ``images``, ``regions``, ``regions_per_image`` (index k: images with k regions, the last index
    ``REGIONS_OVERFLOW`` or more), ``words[field]`` (index k: captions of ``k*width`` to
    ``(k+1)*width - 1`` words, the last bin ``overflow`` or more; short and detailed captions per
    region, the scene caption per image with its ``<rN>`` markup stripped), ``qa_score`` (index k:
    images scoring in ``[k/20, (k+1)/20)``, 1.0 in the last) and ``qa_score_missing``. Splits
    without images are left out.
    """
    result = {}
    for split in splits:
        counts = _split_histograms(Path(release_dir), split)
        if counts["images"]:
            result[split] = counts
    return {
        "bins": {
            "regions_per_image": {"width": 1, "overflow": REGIONS_OVERFLOW},
            "words": {field: {"width": width, "overflow": overflow} for field, (width, overflow) in WORD_BINS.items()},
            "qa_score": {"width": 1 / QA_BINS, "bins": QA_BINS},
        },
        "splits": result,
    }


def _share(counts: list[int]) -> np.ndarray:
    total = sum(counts)
    return np.asarray(counts, dtype=np.float64) * (100.0 / total) if total else np.zeros(len(counts))


def _shown(series: list[list[int]], minimum: int) -> int:
    """How many leading bins to draw: up to the last non-empty bin of any series (at least ``minimum``)."""
    last = max((i for counts in series for i, n in enumerate(counts) if n), default=-1)
    return max(last + 1, minimum)


def _no_images(ax) -> None:
    ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes, fontsize=14, color="0.4")


def _finish(ax, title: str, xlabel: str, ylabel: str, drawn: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    if drawn:
        ax.legend(loc="best", fontsize="small")
    else:
        _no_images(ax)


def _label(split: str, n: int, unit: str) -> str:
    return f"{split} (n={n:,} {unit})"


def _edges(shown: int, width: int) -> np.ndarray:
    """Bin edges; bins of one integer are centred on it."""
    return np.arange(shown + 1) * width - (0.5 if width == 1 else 0.0)


def _overflow_ticks(ax, shown: int, width: int, overflow: int) -> None:
    """Ticks on bin starts (on the integer for bins of one), the overflow bin (if drawn) labelled ``>=overflow``."""
    starts = np.arange(shown) * width
    step = max(1, math.ceil(shown / 12))
    ticks = [float(t) for t in starts[::step]]
    labels = [str(int(t)) for t in ticks]
    if starts[-1] >= overflow:
        while ticks and ticks[-1] > starts[-1] - step * width / 2:  # no label crowding the overflow's
            ticks.pop(), labels.pop()
        ticks.append(float(starts[-1]) + (width / 2 if width > 1 else 0.0))
        labels.append(f">={overflow}")
    ax.set_xticks(ticks, labels)


def _regions_figure(hist: dict) -> Figure:
    fig = Figure(figsize=FIGSIZE["regions_per_image.png"], dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    splits = hist["splits"]
    shown = _shown([s["regions_per_image"] for s in splits.values()], 2)
    edges = _edges(shown, 1)
    for split, s in splits.items():
        ax.stairs(_share(s["regions_per_image"][:shown]), edges, label=_label(split, s["images"], "images"), lw=1.8)
    ax.set_xlim(edges[0], edges[-1])
    _overflow_ticks(ax, shown, 1, REGIONS_OVERFLOW)
    _finish(ax, "Regions per image", "regions in the image", "share of images (%)", bool(splits))
    return fig


def _words_figure(hist: dict) -> Figure:
    fig = Figure(figsize=FIGSIZE["caption_words.png"], dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(CAPTION_FIELDS))
    splits = hist["splits"]
    for ax, field in zip(axes, CAPTION_FIELDS, strict=True):
        width, overflow = WORD_BINS[field]
        shown = _shown([s["words"][field] for s in splits.values()], 2)
        edges = _edges(shown, width)
        unit = "images" if field == "scene_caption" else "regions"
        for split, s in splits.items():
            counts = s["words"][field]
            ax.stairs(_share(counts)[:shown], edges, label=_label(split, sum(counts), unit), lw=1.8)
        ax.set_xlim(edges[0], edges[-1])
        _overflow_ticks(ax, shown, width, overflow)
        xlabel = "words" if width == 1 else f"words (bins of {width})"
        _finish(ax, f"{_TITLES[field].capitalize()} length", xlabel, f"share of {unit} (%)", bool(splits))
    fig.suptitle("Caption length in words (scene captions without their region markup)")
    return fig


def _qa_figure(hist: dict) -> Figure:
    fig = Figure(figsize=FIGSIZE["qa_scores.png"], dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    splits = hist["splits"]
    edges = np.linspace(0.0, 1.0, QA_BINS + 1)
    for split, s in splits.items():
        ax.stairs(_share(s["qa_score"]), edges, label=_label(split, sum(s["qa_score"]), "images"), lw=1.8)
    ax.set_xlim(0.0, 1.0)
    ax.set_xticks(np.linspace(0.0, 1.0, 11))
    _finish(ax, "QA score per image", "qa_score (bins of 0.05)", "share of images (%)", bool(splits))
    return fig


def _save(fig: Figure, path: Path) -> None:
    """Render to a hidden temporary name beside ``path``, then rename: never a half-written PNG."""
    FigureCanvasAgg(fig)
    with atomic.replacing(path) as tmp, open(tmp, "wb") as out:
        # no Software/version chunk, and PNG carries no date unless asked: the same bytes every run
        fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})


def _clear(folder: Path) -> None:
    for file in folder.iterdir():
        if file.is_file() and (file.suffix == ".png" or atomic.is_temporary(file)):
            file.unlink()


def write_plots(release_dir: Path, splits: Sequence[str]) -> list[str]:
    """Write ``plots/{regions_per_image,caption_words,qa_scores}.png``; returns their release-relative paths.

    One series per non-empty split, as shares of its images (or regions), so small splits remain
    visible beside train. Stale PNGs in ``plots/`` are removed first. With no image in any split the
    plots still exist and say so.
    """
    release_dir = Path(release_dir)
    hist = histograms(release_dir, splits)
    folder = release_dir / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    _clear(folder)
    written = []
    # the default style, not whatever matplotlibrc the machine has: same looks and bytes everywhere
    with matplotlib.style.context("default"):
        for name, make in zip(PLOT_FILES, (_regions_figure, _words_figure, _qa_figure), strict=True):
            _save(make(hist), folder / name)
            written.append(f"{PLOTS_DIR}/{name}")
    return written
