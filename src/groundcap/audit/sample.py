"""Strata and the stratified audit sample, read from the work tables part by part (no image bytes).

The audit unit is an image: what the release would hold for it (its QA-passed regions with their short
and detailed captions, and its scene caption). Candidates are the images QA passed and dedup kept
(every QA-passed image when ``work/dedup`` does not exist), and, apart, the images QA failed: a share
of the sample (``audit.failed_share``) goes to them, so that the false-rejection rate (failed images an
auditor passes) is measured; their strata start with ``qa failed |``. Images already judged
(``audit.verdicts``) are left out, so a new export tops the audit up. Each candidate falls in one stratum:

- source: ``sample`` for the bundled sample, the host of a URL, the first folder of a relative path,
  or ``.`` for a file at the top of the source folder;
- regions: ``1-3``, ``4-8`` or ``9+`` released regions;
- words: the plain scene caption's length, ``<=20``, ``21-60`` or ``>60`` words;
- qa: the image's QA score, ``<0.6``, ``0.6-0.8`` or ``>=0.8``.

Allocation is proportional with at least one image per non-empty stratum (``allocate``); within a
stratum images are ranked by ``sha256(seed:image_id)``, so the sample depends on the seed and the
data only, never on the order of parts or on random-module state, and a larger sample contains a
smaller one drawn with the same seed from the same strata.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq

from groundcap import grounding
from groundcap.errors import AuditError, StageInputError
from groundcap.sources import sample as bundled
from groundcap.sources.reference import resolve
from groundcap.storage import parts

DEFAULT_DIR = "audit"  # where `groundcap audit export` writes, under the project root
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Candidate:
    """An image that could be audited, with the facts its stratum is cut from."""

    image_id: str
    stratum: str
    source: str
    region_count: int  # regions the release would hold
    word_count: int  # words of the plain scene caption
    qa_score: float
    qa_passed: bool = True  # False: QA failed it (sampled to measure false rejections, never released)


def source_group(source_path: str) -> str:
    if source_path.startswith(bundled.PREFIX):
        return "sample"
    if "://" in source_path:
        return urlsplit(source_path).netloc or urlsplit(source_path).scheme
    head, sep, _ = source_path.partition("/")
    return head if sep else "."


def _band(value: float, bands: tuple[tuple[float, str], ...]) -> str:
    return next(name for upper, name in bands if value < upper)


_REGION_BANDS = ((4, "1-3"), (9, "4-8"), (math.inf, "9+"))
_WORD_BANDS = ((21, "<=20"), (61, "21-60"), (math.inf, ">60"))
_SCORE_BANDS = ((0.6, "<0.6"), (0.8, "0.6-0.8"), (math.inf, ">=0.8"))


FAILED = "qa failed | "  # the strata of QA-failed images start with this


def stratum(source: str, regions: int, words: int, qa_score: float, qa_passed: bool = True) -> str:
    return ("" if qa_passed else FAILED) + (
        f"source {source} | regions {_band(regions, _REGION_BANDS)} | words {_band(words, _WORD_BANDS)}"
        f" | qa {_band(qa_score, _SCORE_BANDS)}")


def candidates(root: Path) -> Iterator[Candidate]:
    """Every auditable image under ``root/work``, part by part: the releasable ones and the QA-failed ones."""
    work = Path(root) / "work"
    has_dedup = (work / "dedup").is_dir()
    for index in parts.list_parts(work / "qa"):
        qa = parts.read_part(work / "qa", index, ["image_id", "passed", "score", "regions", "scene_caption"])
        ingest = parts.read_part(work / "ingest", index, ["image_id", "source_path"])
        kept = parts.read_part(work / "dedup", index, ["image_id", "kept"]) if has_dedup else [None] * len(qa)
        for q, i, d in zip(qa, ingest, kept, strict=True):
            if q["image_id"] != i["image_id"] or (d is not None and d["image_id"] != q["image_id"]):
                raise StageInputError(f"part {index} of work/qa, work/ingest and work/dedup is out of step; "
                                   "rerun the pipeline")
            if q["passed"] and d is not None and not d["kept"]:
                continue
            source = source_group(i["source_path"])
            regions = sum(bool(r["passed"]) for r in q["regions"])
            words = len(grounding.plain(q["scene_caption"] or "").split())
            score, passed = float(q["score"]), bool(q["passed"])
            yield Candidate(q["image_id"], stratum(source, regions, words, score, passed), source, regions, words,
                            score, passed)


def rank(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def allocate(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """How many images each stratum gives to a sample of ``n`` (at most the population).

    Every non-empty stratum gets one; each further image goes to the stratum that still has images
    left and lies furthest below its proportional quota ``n * size / total``. With more strata than
    ``n``, the ``n`` largest get one each. Ties go to the larger stratum, then to the first by name.
    """
    strata = sorted((s for s, size in sizes.items() if size > 0), key=lambda s: (-sizes[s], s))
    total = sum(sizes[s] for s in strata)
    n = min(n, total)
    if len(strata) >= n:
        return {s: 1 for s in strata[:n]}
    counts = dict.fromkeys(strata, 1)
    for _ in range(n - len(strata)):
        open_ = [s for s in strata if counts[s] < sizes[s]]  # in tie order: max keeps the first of equals
        pick = max(open_, key=lambda s: n * sizes[s] / total - counts[s])
        counts[pick] += 1
    return counts


@dataclass(frozen=True)
class Sample:
    items: list[Candidate]  # sorted by stratum, then rank
    population: dict[str, int]  # candidates per stratum
    allocation: dict[str, int]


def draw(root: Path, size: int, seed: int, failed_share: float = 0.0,
         exclude: Collection[str] = frozenset()) -> Sample:
    """The stratified sample of images not in ``exclude``: ``round(size * failed_share)`` of them QA-failed
    (fewer when fewer failed), the rest releasable. Memory grows with the strata times ``size``, not the dataset."""
    if size < 1:
        raise AuditError(f"audit.sample_size must be at least 1, got {size}")
    population: Counter[str] = Counter()
    best: dict[str, list[tuple[str, Candidate]]] = {}
    for c in candidates(root):
        if c.image_id in exclude:
            continue
        population[c.stratum] += 1
        kept = best.setdefault(c.stratum, [])
        kept.append((rank(seed, c.image_id), c))
        if len(kept) > 2 * size:  # no stratum can give more than `size`: drop the worst-ranked now and then
            kept.sort(key=lambda pair: pair[0])
            del kept[size:]
    passed = {s: n for s, n in population.items() if not s.startswith(FAILED)}
    failed = {s: n for s, n in population.items() if s.startswith(FAILED)}
    if not passed:
        raise AuditError(f"no image in {Path(root) / 'work'} that passed QA (and dedup) is left to audit"
                         + (f" ({len(exclude)} already judged)" if exclude else "") + "; run the pipeline through qa")
    n_failed = min(round(size * failed_share), sum(failed.values()))
    allocation = allocate(passed, size - n_failed) | (allocate(failed, n_failed) if n_failed else {})
    items = [c for s in sorted(allocation) for _, c in sorted(best[s], key=lambda pair: pair[0])[: allocation[s]]]
    return Sample(items, dict(sorted(population.items())), dict(sorted(allocation.items())))


def manifest(drawn: Sample, rows: Mapping[str, dict], seed: int, size: int) -> dict:
    """What an export sampled and from what: the strata, and per item the machine text and masks under review."""
    keep = ("width", "height", "next_region_id", "scene_caption")
    items = [{**asdict(c), **{k: rows[c.image_id][k] for k in keep},
              "regions": {str(r["region_id"]): {"label": r["label"], "short": r["short"], "detailed": r["detailed"],
                                                "segmentation": r["segmentation"]}
                          for r in rows[c.image_id]["regions"]}} for c in drawn.items]
    return {"seed": seed, "sample_size": size, "population": drawn.population, "allocation": drawn.allocation,
            "items": items}


def read_manifest(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AuditError(f"no audit manifest at {path}: run `groundcap audit export` first, or pass "
                                "--manifest with the manifest.json of the export the verdicts are for")
    return json.loads(path.read_text(encoding="utf-8"))


def read_rows(root: Path, ids: set[str], originals: bool = False) -> dict[str, dict]:
    """Everything the gallery and the tasks show for ``ids``: image, released regions, captions, QA.

    The image is the one the release holds (stage redact's: faces and plates blurred, metadata stripped),
    so an auditor never sees a face the release hides; ``originals`` gives ingest's bytes instead."""
    work = Path(root) / "work"
    tables = {
        "ingest": ["image_id", "source_path", "format", "width", "height", "bytes", "reference"],
        "segment": ["image_id", "regions"],
        "caption_regions": ["image_id", "captions"],
        "qa": ["image_id", "score", "reasons", "regions", "scene_caption", "scene_evidence"],
    }
    if not originals:
        if not (work / "redact").is_dir():
            raise AuditError(f"{work / 'redact'} does not exist: run `groundcap redact` first, so the sample shows "
                             "the released (blurred) pixels, or export with --originals")
        tables["redact"] = ["image_id", "bytes", "format", "error"]
    out: dict[str, dict] = {}
    for index in parts.list_parts(work / "qa"):
        read = {stage: resolve(pq.read_table(parts.part_path(work / stage, index), columns=columns,
                                             filters=[("image_id", "in", sorted(ids))]), root).to_pylist()
                for stage, columns in tables.items()}
        for rows in zip(*(read[stage] for stage in tables), strict=True):
            out[rows[0]["image_id"]] = _item(*rows[:4], released=rows[4] if not originals else None)
    missing = ids - set(out)
    if missing:
        raise AuditError(f"images {sorted(missing)[:3]} are gone from {work}; export the audit sample again")
    return out


def _item(image: dict, seg: dict, cap: dict, qa: dict, released: dict | None) -> dict:
    captions = {c["region_id"]: c for c in cap["captions"]}
    verdicts = {r["region_id"]: r for r in qa["regions"]}
    regions = []
    for region in seg["regions"]:
        rid = region["region_id"]
        if not verdicts.get(rid, {}).get("passed"):
            continue
        caption, verdict = captions.get(rid) or {}, verdicts[rid]
        regions.append({"region_id": rid, "segmentation": region["segmentation"], "bbox": region["bbox"],
                        "label": region["label"], "short": caption.get("short") or "",
                        "detailed": caption.get("detailed") or "", "qa_score": verdict["score"],
                        "reasons": verdict["reasons"], "evidence": verdict["evidence"] or []})
    data, fmt = image["bytes"], image["format"]
    if released is not None:
        if released["image_id"] != image["image_id"]:
            raise StageInputError("work/redact and work/ingest are out of step; rerun `groundcap redact`")
        if released["error"] is not None:
            raise AuditError(f"image {image['image_id']} failed the privacy pass ({released['error']}); rerun "
                             "`groundcap redact`, or export with --originals")
        if released["bytes"] is not None:
            data, fmt = released["bytes"], released["format"]
    return {"image_id": image["image_id"], "source_path": image["source_path"], "format": fmt,
            "width": image["width"], "height": image["height"], "bytes": data,
            "qa_score": qa["score"], "reasons": qa["reasons"], "scene_caption": qa["scene_caption"] or "",
            "scene_evidence": qa["scene_evidence"] or [], "regions": regions,
            # the id an entity a reviewer adds gets first: past every region the image has, released or not
            "next_region_id": max((r["region_id"] for r in seg["regions"]), default=0) + 1}
