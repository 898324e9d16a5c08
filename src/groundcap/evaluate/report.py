"""``groundcap eval``: score prediction files on a release split, write ``reports/eval.json`` and a table.

Every image of the split is scored: an image a prediction file leaves out counts as an empty
prediction (and the report says how many). Scene-level scores are computed when a file holds scene
captions, region-level ones when it holds region captions. Several files are scored with one judge
and shown side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

from groundcap.evaluate import agreement, dlc, pancap
from groundcap.evaluate.inputs import Prediction, Reference
from groundcap.evaluate.judges import Judge, RulesMiniLMJudge
from groundcap.storage import atomic

SCENE_ROWS = (*pancap.DIMENSIONS, "overall")
REGION_ROWS = ("positive", "negative", "dlc", "recognized", "uniqueness", "reference_uniqueness")


def evaluate(judge: Judge, references: list[Reference], predictions: dict[str, Prediction],
             rules: RulesMiniLMJudge | None = None) -> dict:
    """The scores of one predictions set on ``references``; with ``rules``, also how often ``judge``
    answers the fixed question set as the rule judge does (``agreement``, reported, not gated)."""
    known = {r.image_id for r in references}
    result: dict = {"images": len(references), "predicted": len(known & set(predictions)),
                    "unknown_images": sorted(set(predictions) - known)[:20]}
    if any(p.scene_caption is not None for p in predictions.values()):
        captions = [(r.scene_caption, {g.region_id: g.bbox for g in r.regions}) for r in references]
        captions += [((predictions[r.image_id].scene_caption or "", predictions[r.image_id].boxes)
                      if r.image_id in predictions else ("", {})) for r in references]
        contents = judge.contents(captions)
        pairs = [(r.image_id, contents[i], contents[len(references) + i]) for i, r in enumerate(references)]
        images = pancap.score(judge, pairs)
        result["scene"] = pancap.summarize(images)
        result["scene_images"] = {s.image_id: {d: None if v is None else round(v["f1"], 4) for d, v in s.dims.items()}
                                  for s in images}
    if any(p.region_captions for p in predictions.values()):
        captions = {k: p.region_captions for k, p in predictions.items()}
        result["region"] = dlc.summarize(dlc.score(judge, references, captions))
        share, n = dlc.uniqueness(judge, references, captions)
        own = {r.image_id: {g.region_id: g.caption for g in r.regions} for r in references}
        ceiling, _ = dlc.uniqueness(judge, references, own)
        result["region"] |= {"uniqueness": None if share is None else round(share, 4), "uniqueness_regions": n,
                             "reference_uniqueness": None if ceiling is None else round(ceiling, 4)}
    if rules is not None:
        result["judge_agreement"] = agreement.measure(rules, judge, agreement.questions(references, predictions, rules))
    errors = getattr(judge, "errors", [])
    result["judge_errors"] = len(errors)
    if errors:
        result["judge_error_examples"] = sorted(set(errors))[:5]
    return result


def write(path: Path, report: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_text(path, json.dumps(report, indent=1, sort_keys=True) + "\n")


def _cell(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def table(report: dict) -> str:
    """A Markdown table: one row per dimension, one column per predictions file."""
    names = list(report["runs"])
    runs = [report["runs"][n] for n in names]
    lines = [f"| metric ({report['split']}, judge {report['judge']['judge']}) | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    if any("scene" in r for r in runs):
        for row in SCENE_ROWS:
            cells = []
            for r in runs:
                value = r.get("scene", {}).get(row)
                cells.append(_cell(value["f1"] if isinstance(value, dict) else value))
            reach = next((r["scene"]["overall_max"] for r in runs if "scene" in r), 4.1)
            label = f"scene {row}" + (" F1" if row != "overall" else f" (max {reach})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any("region" in r for r in runs):
        for row in REGION_ROWS:
            lines.append(f"| region {row} | " + " | ".join(_cell(r.get("region", {}).get(row)) for r in runs) + " |")
    if any("judge_agreement" in r for r in runs):
        lines.append("| judge agreement with rules_minilm | " + " | ".join(
            _cell((r.get("judge_agreement") or {}).get("agreement")) for r in runs) + " |")
    lines.append("| images predicted | " + " | ".join(f"{r['predicted']}/{r['images']}" for r in runs) + " |")
    return "\n".join(lines)
