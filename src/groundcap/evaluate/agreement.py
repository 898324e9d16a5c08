"""How often two judges answer the same questions alike: the rule judge checked against an LLM judge.

The question set is fixed by rules, so both judges answer exactly the same questions: the region-level
ones (from the reference captions, as ``dlc`` asks them) and the scene-level ones the rule reading of
both captions and its entity matching lead to. Reported beside the scores, never used as a gate.
"""

from __future__ import annotations

from collections import Counter

from groundcap.evaluate import dlc, pancap
from groundcap.evaluate.inputs import Prediction, Reference
from groundcap.evaluate.judges import Judge, Question, RulesMiniLMJudge


def questions(references: list[Reference], predictions: dict[str, Prediction],
              rules: RulesMiniLMJudge) -> list[Question]:
    """The fixed question set of a predictions file."""
    out: list[Question] = []
    if any(p.scene_caption is not None for p in predictions.values()):
        refs = rules.contents([(r.scene_caption, {g.region_id: g.bbox for g in r.regions}) for r in references])
        preds = rules.contents([(predictions[r.image_id].scene_caption or "", predictions[r.image_id].boxes)
                                if r.image_id in predictions else ("", {}) for r in references])
        pairs = [(r.image_id, a, b) for r, a, b in zip(references, refs, preds, strict=True)]
        out += [q for *_, qs in pancap.ask(rules, pairs)[1] for q in qs if q is not None]
    if any(p.region_captions for p in predictions.values()):
        out += dlc.flat_questions(dlc.plan(references, {k: p.region_captions for k, p in predictions.items()}))
    return out


def measure(a: Judge, b: Judge, asked: list[Question]) -> dict:
    """Share of questions on which ``a`` and ``b`` give the same (stated, contradicted) answer, overall and
    per kind of fact; questions either judge could not answer are counted apart."""
    va, vb = a.check(asked), b.check(asked)
    same, total, failed = Counter(), Counter(), 0
    for q, x, y in zip(asked, va, vb, strict=True):
        if x.error or y.error:
            failed += 1
            continue
        kind = f"{q.fact.kind}:{q.fact.value[0]}"
        total[kind] += 1
        same[kind] += (x.stated, x.contradicted) == (y.stated, y.contradicted)
    n = sum(total.values())
    return {"judges": [a.name, b.name], "questions": n, "unanswered": failed,
            "agreement": round(sum(same.values()) / n, 4) if n else None,
            "by_kind": {k: {"questions": total[k], "agreement": round(same[k] / total[k], 4)} for k in sorted(total)}}
