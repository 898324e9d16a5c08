"""Human verdicts: reading them in, the error rate with its Wilson interval, the release gate, human_test.

Verdicts come from a Label Studio JSON export (``labelstudio.parse_export``) or from a CSV file with
the header ``item_id,verdict,corrected_caption`` (``verdicts.csv`` in the export folder is a filled-in
template), one row per judgement:

- ``IMAGEID,VERDICT,TEXT``: the verdict on the whole image; TEXT, if not empty, is the corrected
  scene caption (keep its ``<rN>...</rN>`` tags).
- ``IMAGEID#r<REGION_ID>,VERDICT,TEXT``: a verdict on one region; TEXT, if not empty, is its corrected
  short caption. A region row counts toward its image: any region row ``reject`` makes the image
  ``reject``, else any ``edited`` makes it ``edited``; an image row ``reject`` always wins.
- VERDICT is ``accept``, ``reject`` or ``edited``; rows with neither verdict nor text are skipped
  (not reviewed yet).

Whatever the source, an empty text or one equal to the machine text (up to whitespace) is no
correction, and an ``accept`` that carries a real correction becomes ``edited``. An image is an error when it is
rejected or edited: the machine output was wrong, whether or not a person could fix it.

The canonical form is JSON Lines at ``audit.verdicts`` (relative to the project root): one record per
image, sorted by item_id, keys sorted: item_id, verdict, stratum (from the export manifest),
scene_caption (the correction or null), regions ({region_id: {short, detailed}}, corrections or
null, plus ``label`` when a reviewer relabelled the region and ``segmentation``, COCO RLE, when one
repainted the mask in Label Studio), added (entities the reviewer drew in Label Studio, each with the
region_id it is released under, segmentation, label, short and detailed: the reviewer's own text),
source (label_studio | csv) and annotator when known. An import replaces the records of the images it
holds and keeps the others.

Error rates (``summarize``): per stratum, the share of audited images that are errors with a Wilson
score interval; overall both the pooled rate (all audited images alike) and the population-weighted
rate (each stratum weighted by how many releasable images it holds, which undoes the over-sampling
of small strata), whose interval is Wilson's at Kish's effective sample size. Strata are recomputed
from the current work tables, so the weights are those of what would be released; verdicts on images
that are no longer releasable are counted as stale and left out. The gate uses the weighted upper
bound. Verdicts on QA-failed images give the false-rejection rate instead (the share the auditor
accepts as they are), and ``human_test`` how many accepted images ``audit.human_test_size`` still lacks.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from groundcap import grounding, masks
from groundcap.audit.labelstudio import VERDICTS, parse_export
from groundcap.audit.sample import candidates
from groundcap.errors import AuditError
from groundcap.storage import atomic

CSV_HEADER = ("item_id", "verdict", "corrected_caption")
REPORT = "audit.json"


def path(root: Path, params: Mapping[str, Any]) -> Path:
    return Path(root) / params["audit"]["verdicts"]


def is_accepted(record: Mapping | None) -> bool:
    """Accepted or corrected by a person: the image may go to human_test (with its corrections)."""
    return record is not None and record["verdict"] in ("accept", "edited")


def is_error(record: Mapping) -> bool:
    return record["verdict"] in ("reject", "edited")


# --- reading ----------------------------------------------------------------------------------------


def read_csv(file: Path) -> list[dict]:
    """Raw records (see ``finish``) from a verdict CSV; the rules are in the module docstring."""
    with open(file, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != CSV_HEADER:
            raise AuditError(f"{file} must start with the header {','.join(CSV_HEADER)} "
                             f"(got {','.join(reader.fieldnames or []) or 'nothing'})")
        images: dict[str, dict] = {}
        regions: dict[str, list[tuple[int, str, str]]] = {}
        for line, row in enumerate(reader, start=2):
            item, verdict, text = ((row[k] or "").strip() for k in CSV_HEADER)
            verdict = verdict.lower()
            if not verdict and not text:
                continue
            if verdict not in VERDICTS:
                raise AuditError(f"{file} line {line}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
            image_id, sep, region = item.partition("#r")
            if not sep:
                if image_id in images:
                    raise AuditError(f"{file} line {line}: a second row for image {image_id}")
                images[image_id] = {"verdict": verdict, "scene_caption": text or None}
                continue
            if not region.isdigit():
                raise AuditError(f"{file} line {line}: {item!r} is not IMAGEID#r<region_id>")
            if any(r == int(region) for r, _, _ in regions.get(image_id, [])):
                raise AuditError(f"{file} line {line}: a second row for region {region} of image {image_id}")
            regions.setdefault(image_id, []).append((int(region), verdict, text))
    records = []
    for image_id in sorted(set(images) | set(regions)):
        image = images.get(image_id, {"verdict": "accept", "scene_caption": None})
        votes = {v for _, v, _ in regions.get(image_id, [])}
        verdict = next((v for v in ("reject", "edited") if v == image["verdict"] or v in votes), image["verdict"])
        records.append({"item_id": image_id, "verdict": verdict, "scene_caption": image["scene_caption"],
                        "regions": {rid: {"short": text} for rid, _, text in regions.get(image_id, []) if text},
                        "annotator": None})
    return records


def _same(a: str | None, b: str | None) -> bool:
    return " ".join((a or "").split()) == " ".join((b or "").split())


def _edited_mask(image_id: str, rid, mask: dict | None, original: Mapping) -> dict | None:
    """The reviewer's mask (COCO RLE) when it differs from the released one, else None."""
    if mask is None or original.get("segmentation") is None:  # no brush result, or an export from before masks
        return None
    theirs, ours = masks.decode(mask), masks.decode(original["segmentation"])
    if theirs.shape != ours.shape:
        raise AuditError(f"image {image_id}, region {rid}: the exported mask is {theirs.shape[1]}x{theirs.shape[0]}, "
                         f"the image {ours.shape[1]}x{ours.shape[0]}; export the tasks of this sample again")
    if not theirs.any():
        raise AuditError(f"image {image_id}, region {rid}: the mask was erased; choose reject instead")
    return None if np.array_equal(theirs, ours) else mask


def _added(image_id: str, drawn: list[Mapping], item: Mapping) -> list[dict]:
    """The entities a reviewer drew, checked, ordered top to bottom then left to right, with the region ids
    they are released under (after every region id the image has, from the manifest)."""
    if drawn and "next_region_id" not in item:
        raise AuditError(f"image {image_id}: the export manifest predates drawn entities; export the sample again "
                         "and review it there")
    out = []
    for entity in drawn:
        where = f"image {image_id}: the entity drawn as result {entity.get('result_id')}"
        mask = masks.decode(entity["segmentation"])
        if mask.shape != (item["height"], item["width"]):
            raise AuditError(f"{where} is {mask.shape[1]}x{mask.shape[0]}, the image {item['width']}x{item['height']}; "
                             "export the tasks of this sample again")
        if not mask.any():
            raise AuditError(f"{where} covers no pixel; draw it again or delete it")
        texts = {k: (entity.get(k) or "").strip() or None for k in ("label", "short", "detailed")}
        if not all(texts.values()):
            raise AuditError(f"{where} needs a label, a short and a detailed caption written by the reviewer (select "
                             "it and fill the three text areas): human_test holds no entity without a person's words")
        out.append({"segmentation": entity["segmentation"], **texts})
    out.sort(key=lambda e: (masks.bbox(e["segmentation"])[1], masks.bbox(e["segmentation"])[0],
                            e["segmentation"]["counts"]))
    return [{"region_id": item["next_region_id"] + k, **e} for k, e in enumerate(out)]


def finish(raw: Mapping, item: Mapping, source: str) -> dict:
    """The canonical record for a raw one, checked against its manifest ``item`` (the machine text)."""
    image_id, originals = raw["item_id"], item["regions"]
    scene = raw.get("scene_caption")
    scene = scene.strip() if scene and not _same(scene, item["scene_caption"]) else None
    added = _added(image_id, raw.get("added") or [], item)
    if scene is not None:
        known = {int(r) for r in originals} | {a["region_id"] for a in added}
        unknown = {rid for rid, _ in grounding.references(scene)} - known
        if not grounding.is_well_formed(scene) or unknown:
            raise AuditError(f"image {image_id}: the corrected scene caption must keep well-formed <rN>...</rN> tags "
                             f"that point at its regions ({', '.join(str(r) for r in sorted(known))})"
                             + (f"; it names regions {sorted(unknown)}" if unknown else ""))
    regions = {}
    for rid, texts in raw.get("regions", {}).items():
        if str(rid) not in originals:
            raise AuditError(f"image {image_id} has no released region {rid}; its regions are "
                             f"{', '.join(sorted(originals, key=int))}")
        fixed = {k: (texts.get(k) or "").strip() or None for k in ("short", "detailed")}
        fixed = {k: v if v is not None and not _same(v, originals[str(rid)][k]) else None for k, v in fixed.items()}
        if (name := (texts.get("label") or "").strip()) and not _same(name, originals[str(rid)].get("label")):
            fixed["label"] = name  # relabelled
        if (mask := _edited_mask(image_id, rid, texts.get("segmentation"), originals[str(rid)])) is not None:
            fixed["segmentation"] = mask
        if any(fixed.values()):
            regions[str(rid)] = fixed
    verdict = raw["verdict"]
    if verdict == "accept" and (scene or regions or added):
        verdict = "edited"
    record = {"item_id": image_id, "verdict": verdict, "stratum": item["stratum"], "scene_caption": scene,
              "regions": dict(sorted(regions.items(), key=lambda kv: int(kv[0]))), "added": added, "source": source}
    if raw.get("annotator"):
        record["annotator"] = raw["annotator"]
    return record


def read(file: Path, fmt: str, manifest: Mapping) -> list[dict]:
    """Canonical records from a verdict file; ``fmt`` is auto, label-studio or csv."""
    file = Path(file)
    if not file.is_file():
        raise AuditError(f"verdict file {file} does not exist")
    if fmt == "auto":
        fmt = "csv" if file.suffix.lower() == ".csv" else "label-studio"
    if fmt == "csv":
        raw, source = read_csv(file), "csv"
    elif fmt == "label-studio":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AuditError(f"{file} is not JSON ({exc}); pass --format csv for a CSV file") from exc
        raw, source = parse_export(data), "label_studio"
    else:
        raise AuditError(f"unknown verdict format {fmt!r}; use auto, label-studio or csv")
    items = {i["image_id"]: i for i in manifest["items"]}
    unknown = sorted({r["item_id"] for r in raw} - set(items))
    if unknown:
        raise AuditError(f"{file} judges images that are not in the exported sample ({', '.join(unknown[:3])}"
                         f"{', ...' if len(unknown) > 3 else ''}); "
                         "import against the manifest of that export (--manifest)")
    return [finish(r, items[r["item_id"]], source) for r in raw]


# --- the canonical file -----------------------------------------------------------------------------


def load(root: Path, params: Mapping[str, Any]) -> dict[str, dict]:
    """The imported verdicts by image id; empty when none were imported."""
    file = path(root, params)
    if not file.is_file():
        return {}
    records = {}
    for line, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AuditError(f"{file} line {line} is not JSON ({exc}); fix it or import the verdicts again") from exc
        if not isinstance(record, dict) or record.get("verdict") not in VERDICTS or not record.get("item_id"):
            raise AuditError(f"{file} line {line} is not a verdict record (item_id, verdict in {', '.join(VERDICTS)})")
        records[record["item_id"]] = record
    return records


def merge(root: Path, params: Mapping[str, Any], records: Iterable[dict]) -> Path:
    """Write ``records`` into the canonical file, replacing earlier verdicts on the same images."""
    merged = load(root, params) | {r["item_id"]: r for r in records}
    file = path(root, params)
    file.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(file, "".join(json.dumps(merged[k], sort_keys=True, ensure_ascii=False) + "\n"
                                           for k in sorted(merged)))


# --- error rates ------------------------------------------------------------------------------------


def wilson(errors: float, n: float, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when nothing was observed."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p, z2 = errors / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # the bounds meet 0 and 1 exactly when no or every item failed (floating point misses by ~1e-17)
    return (0.0 if errors <= 0 else centre - half), (1.0 if errors >= n else centre + half)


def _r(x: float) -> float:
    return round(x, 4)


def summarize(records: Mapping[str, dict], population: Mapping[str, int], strata: Mapping[str, str],
              confidence: float, failed: Collection[str] = frozenset()) -> dict:
    """Error rates per stratum and overall for the ``records`` of images in ``strata`` (id -> stratum), and
    the false-rejection rate over the records of the QA-failed images ``failed``."""
    current = [r for r in records.values() if r["item_id"] in strata]
    rejected = [r for r in records.values() if r["item_id"] in failed]
    passed = sum(r["verdict"] == "accept" for r in rejected)
    audited = Counter(strata[r["item_id"]] for r in current)
    errors = Counter(strata[r["item_id"]] for r in current if is_error(r))
    per_stratum = {}
    for s in sorted(set(population) | set(audited)):
        n, e = audited[s], errors[s]
        per_stratum[s] = {"population": population.get(s, 0), "audited": n, "errors": e,
                          "error_rate": _r(e / n) if n else None, "wilson": [_r(x) for x in wilson(e, n, confidence)]}
    n, e = sum(audited.values()), sum(errors.values())
    weights = {s: population.get(s, 0) for s in audited}
    total_weight = sum(weights.values())
    if total_weight:
        weighted = sum(weights[s] * errors[s] / audited[s] for s in audited) / total_weight
        effective_n = total_weight**2 / sum(weights[s] ** 2 / audited[s] for s in audited)  # Kish
    else:
        weighted, effective_n = 0.0, 0.0
    return {
        "confidence": confidence,
        "audited": n,
        "errors": e,
        "stale": len(records) - len(current) - len(rejected),
        "verdicts": dict(sorted(Counter(r["verdict"] for r in current).items())),
        "error_rate": _r(e / n) if n else None,
        "wilson": [_r(x) for x in wilson(e, n, confidence)],
        "weighted": {"error_rate": _r(weighted) if n else None, "effective_n": _r(effective_n),
                     "wilson": [_r(x) for x in wilson(weighted * effective_n, effective_n, confidence)]},
        "population": sum(population.values()),
        "population_in_audited_strata": total_weight,
        "strata": per_stratum,
        "false_rejection": {"audited": len(rejected), "accepted": passed,
                            "rate": _r(passed / len(rejected)) if rejected else None,
                            "wilson": [_r(x) for x in wilson(passed, len(rejected), confidence)]},
    }


def report(root: Path, params: Mapping[str, Any]) -> dict:
    """``summarize`` over the imported verdicts and the current work tables, with the ``human_test`` count."""
    records = load(root, params)
    population: Counter[str] = Counter()
    strata, failed = {}, set()
    for c in candidates(root):
        if not c.qa_passed:
            failed.update({c.image_id} & records.keys())
            continue
        population[c.stratum] += 1
        if c.image_id in records:
            strata[c.image_id] = c.stratum
    summary = summarize(records, dict(sorted(population.items())), strata, float(params["audit"]["confidence"]),
                        failed)
    accepted = sum(is_accepted(records[i]) for i in strata)
    wanted = params["audit"]["human_test_size"]
    summary["human_test"] = {"requested": wanted, "accepted": accepted,
                             "short_by": max(0, wanted - accepted) if wanted is not None else 0}
    return summary


def human_test_message(status: Mapping) -> str:
    """One line on whether the accepted images reach ``audit.human_test_size``."""
    wanted, accepted = status["requested"], status["accepted"]
    if wanted is None:
        return f"human_test: every accepted image ({accepted}); set audit.human_test_size for a fixed size"
    if status["short_by"]:
        return (f"human_test: only {accepted} of the {wanted} images audit.human_test_size asks for are accepted; "
                f"{status['short_by']} more accepted images are needed (`groundcap audit export` draws images not "
                "judged yet)")
    return f"human_test: {wanted} of the {accepted} accepted images (audit.human_test_size)"


def write_report(root: Path, summary: Mapping) -> Path:
    out = Path(root) / "reports" / REPORT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


# --- what the release reads -------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    ok: bool
    message: str
    summary: dict


def gate(root: Path, params: Mapping[str, Any]) -> GateResult:
    """Whether a release may be built: the audited error rate is low enough, or audits are not required."""
    section = params["audit"]
    file = path(root, params)
    records = load(root, params)
    if not records:
        if section["required"]:
            return GateResult(False, f"audits are required (audit.required) but {file} has none: run `groundcap audit "
                                     "export`, review, then `groundcap audit import FILE`", {"audited": 0})
        return GateResult(True, "no human verdicts (audit.required is false)", {"audited": 0})
    summary = report(root, params)
    limit = float(section["max_error_rate"])
    if summary["audited"] == 0:
        message = (f"none of the {len(records)} verdicts in {file} is on an image this run would release: "
                   "export a new sample with `groundcap audit export`, review it and import the verdicts")
        if section["required"]:
            return GateResult(False, message, summary)
        return GateResult(True, f"{message} (audit.required is false)", summary)
    upper = summary["weighted"]["wilson"][1]
    numbers = (f"{summary['errors']} of {summary['audited']} audited images rejected or edited, population-weighted "
               f"error rate {summary['weighted']['error_rate']:.1%}, {section['confidence']:.0%} Wilson upper bound "
               f"{upper:.1%}")
    if upper > limit:
        return GateResult(False, f"audit gate: {numbers} > audit.max_error_rate {limit:.1%}; fix the pipeline and "
                                 "audit a new sample, or audit more images if the bound is wide (audit.sample_size)",
                          summary)
    return GateResult(True, f"audit gate passed: {numbers} <= {limit:.1%}", summary)


def human_test(root: Path, params: Mapping[str, Any]) -> dict[str, dict]:
    """Images people accepted or corrected -> the corrections to apply before release.

    Each value: ``scene_caption`` (corrected text or None), ``regions`` ({region_id (int):
    {short, detailed[, label][, segmentation]}}, a None field keeps the machine caption; a segmentation
    replaces the mask, its box and area) and ``added`` (the entities people drew, released with
    ``source: human``).
    """
    return {
        image_id: {"scene_caption": r["scene_caption"],
                   "regions": {int(rid): dict(fix) for rid, fix in r["regions"].items()},
                   "added": [dict(a) for a in r.get("added") or []]}
        for image_id, r in sorted(load(root, params).items()) if is_accepted(r)
    }


def import_file(root: Path, params: Mapping[str, Any], file: Path, fmt: str, manifest: Mapping) -> dict:
    """Read ``file``, merge its verdicts into the canonical file, write reports/audit.json; the summary."""
    records = read(file, fmt, manifest)
    if not records:
        raise AuditError(f"{file} holds no verdicts yet: review some images first")
    merge(root, params, records)
    summary = {**report(root, params), "imported": len(records)}
    write_report(root, summary)
    return summary
