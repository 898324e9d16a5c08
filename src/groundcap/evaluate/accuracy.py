"""How good the annotation engine's captions were: its machine captions scored against people's corrections on
``human_test``.

The release's ``human_test`` rows carry what people accepted or corrected; the work tables still hold
what the machine wrote for the same images (``work/qa``'s scene caption, ``work/caption_regions``'
region captions). Scoring the second against the first with ``groundcap eval``'s metrics says, in
numbers, how good the machine captions were where people looked. The regions and boxes are the
released ones on both sides, so locations score 1 by construction; an entity people drew because the
engine missed it (``source: human``) has no machine caption and scores as a miss.
"""

from __future__ import annotations

from pathlib import Path

from groundcap.evaluate import report
from groundcap.evaluate.inputs import EvalInputError, Prediction, Reference, read_reference
from groundcap.evaluate.judges import Judge, RulesMiniLMJudge
from groundcap.qa.claims import caption_text
from groundcap.splits import HUMAN_TEST
from groundcap.storage import parts


def _rows(directory: Path, columns: list[str], wanted: set[str]) -> dict[str, dict]:
    return {row["image_id"]: row for index in parts.list_parts(directory)
            for row in parts.read_part(directory, index, ["image_id", *columns]) if row["image_id"] in wanted}


def machine_predictions(work: Path, references: list[Reference]) -> dict[str, Prediction]:
    """What the machine wrote for the reference images, in the form ``groundcap eval`` scores."""
    wanted = {r.image_id for r in references}
    scenes = _rows(Path(work) / "qa", ["scene_caption"], wanted)
    captions = _rows(Path(work) / "caption_regions", ["captions"], wanted)
    out = {}
    for ref in references:
        mine = {c["region_id"]: caption_text(c["short"] or "", c["detailed"] or "")
                for c in (captions.get(ref.image_id) or {}).get("captions") or []}
        out[ref.image_id] = Prediction(ref.image_id, (scenes.get(ref.image_id) or {}).get("scene_caption") or "",
                                       {g.region_id: g.bbox for g in ref.regions},
                                       {g.region_id: mine.get(g.region_id, "") for g in ref.regions})
    return out


def accuracy(work: Path, release: Path, judge: Judge | None = None) -> dict | None:
    """The machine captions' scores on the release's ``human_test`` split; None when it has no images."""
    try:
        references = read_reference(str(release), HUMAN_TEST)
    except EvalInputError:
        return None
    judge = judge or RulesMiniLMJudge()
    result = report.evaluate(judge, references, machine_predictions(work, references))
    result.pop("scene_images", None)
    return {"judge": judge.name, **result}
