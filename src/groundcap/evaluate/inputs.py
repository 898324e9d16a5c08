"""What is scored against what: a release split's people-checked captions, and a model's predictions.

Predictions are one row per image, keyed by ``image_id``, in Parquet or JSON Lines:

- ``scene_caption``: a grounded scene caption, either with ``<rN>phrase</rN>`` references whose
  boxes are in ``regions`` ([{region_id, bbox: [x, y, w, h] in pixels}], the release's own form), or
  Pancap-style with inline boxes ``phrase [x1, y1, x2, y2]`` normalised to 0-1 (what
  ``build.pancap_text`` writes, also read from a ``scene_caption_boxes`` column);
- region captions keyed by the *reference* ``region_id`` (a region captioner given the reference
  masks, as DLC-Bench does): ``region_captions`` [{region_id, caption}], or in the release's form
  ``regions`` [{region_id, short_caption, detailed_caption}].

So a release's own ``data/`` rows are valid predictions: scoring a split against itself scores 1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from groundcap import grounding
from groundcap.errors import GroundcapError
from groundcap.evaluate.content import Box
from groundcap.qa.claims import caption_text


class EvalInputError(GroundcapError, ValueError):
    """A release split or a predictions file that cannot be scored as given."""


@dataclass(frozen=True)
class Region:
    region_id: int
    bbox: Box
    label: str
    caption: str  # short and detailed caption, as QA judges them (``claims.caption_text``)


@dataclass(frozen=True)
class Reference:
    image_id: str
    width: int
    height: int
    scene_caption: str
    regions: tuple[Region, ...]


@dataclass
class Prediction:
    image_id: str
    scene_caption: str | None = None  # in <rN> form (inline boxes converted)
    boxes: dict[int, Box] = field(default_factory=dict)
    region_captions: dict[int, str] = field(default_factory=dict)


_COLUMNS = ["image_id", "width", "height", "regions", "scene_caption"]


def read_reference(release: str, split: str) -> list[Reference]:
    """The images of ``split`` in a release folder (or fsspec URL), sorted by image_id."""
    fs, root = url_to_fs(str(release))
    shards = sorted(fs.glob(f"{root.rstrip('/')}/data/{split}-*.parquet"))
    if not shards:
        held = sorted({Path(p).name.split("-")[0] for p in fs.glob(f"{root.rstrip('/')}/data/*.parquet")})
        raise EvalInputError(f"{release} has no split {split!r} in data/ (it holds: {', '.join(held) or 'nothing'}); "
                             "pass --split with one of those, or point --release at a groundcap release folder")
    items = []
    for path in shards:
        with fs.open(path, "rb") as fh:
            for row in pq.read_table(fh, columns=_COLUMNS).to_pylist():
                regions = tuple(Region(int(r["region_id"]), tuple(float(v) for v in r["bbox"]), r["label"] or "",
                                       caption_text(r["short_caption"] or "", r["detailed_caption"] or ""))
                                for r in row["regions"] or [])
                items.append(Reference(row["image_id"], int(row["width"]), int(row["height"]),
                                       row["scene_caption"] or "", regions))
    if not items:
        raise EvalInputError(f"split {split!r} of {release} holds no images"
                             + (": people-checked images go there once audit verdicts are imported "
                                "(`groundcap audit import`) and the release is built again; or pass --split test"
                                if split == "human_test" else "; pass --split with another split"))
    return sorted(items, key=lambda r: r.image_id)


# --- predictions ------------------------------------------------------------------------------------

_NUM = r"\s*(-?\d*\.?\d+)\s*"
_INLINE = re.compile(r"\s*\(?\[\[?" + ",".join([_NUM] * 4) + r"\]\]?\)?")
_BOUNDARY = {"is", "are", "was", "were", "of", "and", "or", "with", "by", "to", "on", "in", "at", "near", "from",
             "under", "above", "below", "behind", "beside", "next", "shows", "show", "has", "have", "while", "where",
             "which", "that", "it", "there", "holding", "wearing", "over", "into", "onto", "within", "inside"}
_ARTICLES = {"a", "an", "the", "some", "two", "three", "several", "many"}


def from_inline_boxes(text: str, width: int, height: int) -> tuple[str, dict[int, Box]]:
    """A Pancap-style caption (``phrase [x1, y1, x2, y2]``, 0-1) as ``<rN>phrase</rN>`` text and pixel boxes.

    The phrase is the noun phrase right before the box: words back to punctuation, a preposition, verb
    or conjunction, or through the article that opens it. Mentions with the very same box are one entity.
    """
    out, boxes, last, ids = [], {}, 0, {}
    for m in _INLINE.finditer(text):
        n = ids.setdefault(m.groups(), len(ids))
        before = text[last:m.start()]
        words = list(re.finditer(r"[^\s,;:.!?()]+", before))
        start = len(before)
        for w in reversed(words):
            if re.search(r"[,;:.!?()]", before[w.end():start]) or w.group(0).lower() in _BOUNDARY:
                break
            start = w.start()
            if w.group(0).lower() in _ARTICLES:
                break
        phrase = before[start:].strip()
        x1, y1, x2, y2 = (float(g) for g in m.groups())
        out.append(before[:start] + (grounding.ref(n, phrase) if phrase else ""))
        boxes[n] = (x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height)
        last = m.end()
    out.append(text[last:])
    return "".join(out), boxes


def _rows(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if text.strip():
                try:
                    rows.append(json.loads(text))
                except json.JSONDecodeError as exc:
                    raise EvalInputError(f"{path} line {line} is not JSON ({exc}); predictions are JSON Lines") from exc
        return rows
    if path.suffix.lower() == ".parquet":
        return pq.read_table(path).to_pylist()
    raise EvalInputError(f"{path}: predictions must be .parquet or .jsonl")


def _prediction(row: dict, ref: Reference | None, where: str) -> Prediction:
    pred = Prediction(row["image_id"])
    regions = row.get("regions") or []
    pred.boxes = {int(r["region_id"]): tuple(float(v) for v in r["bbox"]) for r in regions if r.get("bbox") is not None}
    text = row.get("scene_caption")
    inline = bool(text) and not grounding.mentions(text) and _INLINE.search(text) is not None
    if inline or (not text and row.get("scene_caption_boxes")):
        if ref is None:
            raise EvalInputError(f"{where}: inline boxes need the image size; image {pred.image_id} is not in the "
                                 "split")
        text, pred.boxes = from_inline_boxes(text or row["scene_caption_boxes"], ref.width, ref.height)
    if text is not None:
        if not grounding.is_well_formed(text):
            raise EvalInputError(f"{where}: image {pred.image_id}'s scene_caption has unmatched <rN> tags")
        pred.scene_caption = text
    listed = {int(r["region_id"]): r["caption"] for r in row.get("region_captions") or []}
    in_regions = {int(r["region_id"]): caption_text(r.get("short_caption") or "", r.get("detailed_caption") or "")
                  for r in regions if r.get("short_caption") or r.get("detailed_caption")}
    if listed and in_regions:
        raise EvalInputError(f"{where}: image {pred.image_id} has region captions both in region_captions and in "
                             "regions[].short_caption; give them one way")
    pred.region_captions = {k: v or "" for k, v in (listed or in_regions).items()}
    return pred


def read_predictions(path: str | Path, references: list[Reference]) -> dict[str, Prediction]:
    """``image_id -> Prediction`` from a predictions file (rules in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"predictions file {path} does not exist")
    by_id = {r.image_id: r for r in references}
    out: dict[str, Prediction] = {}
    for i, row in enumerate(_rows(path), start=1):
        where = f"{path} row {i}"
        if not isinstance(row, dict) or not row.get("image_id"):
            raise EvalInputError(f"{where} has no image_id")
        if row["image_id"] in out:
            raise EvalInputError(f"{where}: a second row for image {row['image_id']}")
        try:
            out[row["image_id"]] = _prediction(row, by_id.get(row["image_id"]), where)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, EvalInputError):
                raise
            raise EvalInputError(f"{where} is malformed ({type(exc).__name__}: {exc}); see `groundcap eval --help` "
                                 "for the predictions format") from exc
    return out
