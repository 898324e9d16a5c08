"""The QA summary (``reports/qa.json``, DVC metrics) and the tables behind its DVC plots.

Counted from the QA table's rows: images and regions passed / failed, failure and flag reasons, the
share of each image's pixels its kept entities cover (``coverage``: mean, min, histogram),
per claim kind the claims parsed and judged and how many were supported, contradicted or unverifiable
(``evidence``; every judged claim gets exactly one verdict, labels are never judged), cross-model
consistency, and score histograms. The plot tables are small CSVs under ``reports/plots/`` that
``dvc plots show`` renders (definitions in dvc.yaml).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from groundcap.storage import atomic

BINS = 10  # score histograms: [0, 0.1), ..., [0.9, 1.0]
VERDICTS = ("supported", "contradicted", "unverifiable")


class Summary:
    """Accumulates QA rows part by part, so the report never needs the whole table in memory."""

    def __init__(self) -> None:
        self.images, self.regions = Counter(), Counter()
        self.image_reasons, self.region_reasons, self.flags = Counter(), Counter(), Counter()
        self.evidence: dict[str, Counter] = {}
        self.consistency = Counter()
        self.similarity_sum = 0.0
        self.region_scores, self.similarities = Counter(), Counter()
        self.coverage, self.coverage_sum, self.coverage_min = Counter(), 0.0, None

    def add(self, rows: Iterable[dict], reason_kind=lambda r: r) -> None:
        for row in rows:
            self.images["passed" if row["passed"] else "failed"] += 1
            self._reasons(row["reasons"], self.image_reasons, reason_kind)
            self._claims(row.get("scene_evidence") or [])
            if (covered := row.get("coverage")) is not None:
                self.coverage[_bin(covered)] += 1
                self.coverage_sum += covered
                self.coverage_min = covered if self.coverage_min is None else min(self.coverage_min, covered)
            for region in row["regions"]:
                self.regions["passed" if region["passed"] else "failed"] += 1
                self.region_scores[_bin(region["score"])] += 1
                self._reasons(region["reasons"], self.region_reasons)
                self._claims(region.get("evidence") or [])
                if c := region.get("consistency"):
                    self.consistency["passed" if c["passed"] else "failed"] += 1
                    if (sim := c["similarity"]) is not None:
                        self.similarity_sum += sim
                        self.similarities[_bin(sim)] += 1

    def _reasons(self, reasons, counter: Counter, kind=lambda r: r) -> None:
        for reason in reasons:
            if reason.startswith("flagged: "):
                self.flags[reason.removeprefix("flagged: ")] += 1
            else:
                counter[kind(reason)] += 1

    def _claims(self, claims) -> None:
        for claim in claims:
            self.evidence.setdefault(claim["kind"], Counter())[claim["verdict"]] += 1

    def to_dict(self) -> dict:
        checked = sum(self.consistency.values())
        measured = sum(self.coverage.values())
        return {
            "coverage": {  # share of each image's pixels its kept entities cover (images a stage failed on: none)
                "images": measured,
                "mean": round(self.coverage_sum / measured, 4) if measured else None,
                "min": self.coverage_min,
                "histogram": dict(_histogram(self.coverage)),
            },
            "images": {"passed": self.images["passed"], "failed": self.images["failed"]},
            "regions": {"passed": self.regions["passed"], "failed": self.regions["failed"]},
            "image_failure_reasons": dict(sorted(self.image_reasons.items())),
            "region_failure_reasons": dict(sorted(self.region_reasons.items())),
            "flags": dict(sorted(self.flags.items())),
            "evidence": {kind: {"parsed": sum(v.values()), **{verdict: v[verdict] for verdict in VERDICTS}}
                         for kind, v in sorted(self.evidence.items())},
            "consistency": {
                "regions_checked": checked,
                "regions_agreeing": self.consistency["passed"],
                "mean_similarity": round(self.similarity_sum / sum(self.similarities.values()), 4)
                if self.similarities else None,
            },
        }

    def write(self, reports: Path) -> None:
        reports.mkdir(parents=True, exist_ok=True)
        atomic.write_text(reports / "qa.json", json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        plots = reports / "plots"
        plots.mkdir(exist_ok=True)
        _csv(plots / "region_scores.csv", ["score", "regions"], _histogram(self.region_scores))
        _csv(plots / "similarity.csv", ["similarity", "regions"], _histogram(self.similarities))
        reasons = [(f"image: {r}", n) for r, n in self.image_reasons.items()]
        reasons += [(f"region: {r}", n) for r, n in self.region_reasons.items()]
        reasons += [(f"flag: {r}", n) for r, n in self.flags.items()]
        _csv(plots / "rejections.csv", ["reason", "count"], sorted(reasons) or [("none", 0)])


def _bin(score: float) -> int:
    return min(BINS - 1, max(0, int(score * BINS)))


def _histogram(counts: Counter) -> list[tuple[str, int]]:
    return [(f"{b / BINS:.1f}-{(b + 1) / BINS:.1f}", counts[b]) for b in range(BINS)]


# How DVC draws the CSVs ``Summary.write`` puts in reports/plots/ (``dvc plots show``), in dvc.yaml.
DVC_PLOTS = [
    {"reports/plots/region_scores.csv": {"title": "Region QA scores", "template": "bar_horizontal",
                                         "x": "regions", "y": "score"}},
    {"reports/plots/similarity.csv": {"title": "Cross-model caption similarity (MiniLM cosine)",
                                      "template": "bar_horizontal", "x": "regions", "y": "similarity"}},
    {"reports/plots/rejections.csv": {"title": "QA failure and flag reasons", "template": "bar_horizontal_sorted",
                                      "x": "count", "y": "reason"}},
]


def _csv(path: Path, header: list[str], rows) -> None:
    """Written under a temporary name and renamed, never truncated in place: DVC may hardlink the old file
    to its cache (docs/pipeline.md, "Disk")."""
    with atomic.replacing(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
