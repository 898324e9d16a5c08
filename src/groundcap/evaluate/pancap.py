"""Scene level, PancapScore-style: five F1 scores of a grounded scene caption against the reference.

Definitions (Lin et al., "Panoptic Captioning: An Equivalence Bridge for Image and Text", NeurIPS
2025, and its reference code ``pancapscore/eval_alldims.py``):

- **tags**: entity instances matched one-to-one (``evaluate.matching``); recall = matched / reference
  entities, precision = matched / predicted entities.
- **locations**: matched pairs whose boxes reach IoU 0.5; recall over reference entities with a box,
  precision over predicted ones with a box.
- **attributes, relations, global state**: each fact of the reference is asked of the prediction
  (through the entity matching: a fact about an unmatched entity scores 0) as two yes/no questions,
  "is it stated?" and "is its contrary stated?", worth 0.5 each (stated, and not contradicted);
  recall is the mean over the reference's facts. Precision asks the prediction's facts of the
  reference the same way.
- **overall** = tags + locations + attributes + relations + 0.1 x global (the paper's weights; at most 4.1).

Each F1 is computed per image and averaged over images. One departure from the reference code: a
dimension that neither caption of an image has facts in (no relations at all) is left out of that
image's average instead of scoring 0, so a perfect caption scores 1 on every dimension;
``overall_max`` says what the overall can reach on the split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from groundcap.evaluate.content import Content
from groundcap.evaluate.judges import Judge, Question
from groundcap.evaluate.matching import Match, f1, match

DIMENSIONS = ("tags", "locations", "attributes", "relations", "global")
WEIGHTS = {"tags": 1.0, "locations": 1.0, "attributes": 1.0, "relations": 1.0, "global": 0.1}
_FACT_KIND = {"attributes": "attribute", "relations": "relation", "global": "global"}


@dataclass
class ImageScore:
    image_id: str
    dims: dict[str, dict | None] = field(default_factory=dict)  # dimension -> {recall, precision, f1} or None


def _pr(recall: float, precision: float) -> dict:
    return {"recall": recall, "precision": precision, "f1": f1(recall, precision)}


def _questions(source: Content, target: Content, pairs: dict[int, int], kind: str) -> list[Question | None]:
    """``source``'s facts of ``kind`` put to ``target`` (None: a fact about an entity with no match)."""
    out: list[Question | None] = []
    for fact in source.of(kind):
        if kind == "global":
            out.append(Question(fact, target))
        elif fact.subject in pairs and (fact.object is None or fact.object in pairs):
            out.append(Question(fact, target, pairs[fact.subject], pairs.get(fact.object)))
        else:
            out.append(None)
    return out


def _match(judge: Judge, ref: Content, pred: Content) -> Match:
    r, p = list(ref.entities.values()), list(pred.entities.values())
    return match(r, p, judge.similarity([e.tag for e in r], [e.tag for e in p]),
                 judge.similarity([e.phrase for e in r], [e.phrase for e in p]))


Asked = list[tuple[int, str, str, list[Question | None]]]  # (image, dimension, side, its questions)


def ask(judge: Judge, pairs: list[tuple[str, Content, Content]]) -> tuple[list[Match], Asked]:
    """The entity matching of each pair and the questions it leads to, both directions."""
    judge.embed([t for _, ref, pred in pairs for c in (ref, pred) for e in c.entities.values()
                 for t in (e.tag, e.phrase)])
    matches = [_match(judge, ref, pred) for _, ref, pred in pairs]
    asked: Asked = []
    for n, ((_, ref, pred), m) in enumerate(zip(pairs, matches, strict=True)):
        back = {v: k for k, v in m.pairs.items()}
        for dim, kind in _FACT_KIND.items():
            asked.append((n, dim, "recall", _questions(ref, pred, m.pairs, kind)))
            asked.append((n, dim, "precision", _questions(pred, ref, back, kind)))
    return matches, asked


def score(judge: Judge, pairs: list[tuple[str, Content, Content]]) -> list[ImageScore]:
    """Scores of (image_id, reference content, predicted content) pairs; the judge's questions of all
    images go out in one call."""
    matches, asked = ask(judge, pairs)
    flat = [q for *_, qs in asked for q in qs if q is not None]
    verdicts = iter(judge.check(flat))
    results = [ImageScore(image_id) for image_id, _, _ in pairs]
    for n, ((_, ref, pred), m) in enumerate(zip(pairs, matches, strict=True)):
        tags_r = len(m.pairs) / len(ref.entities) if ref.entities else 0.0
        tags_p = len(m.pairs) / len(pred.entities) if pred.entities else 0.0
        results[n].dims["tags"] = _pr(tags_r, tags_p) if ref.entities or pred.entities else None
        boxed_r = sum(e.box is not None for e in ref.entities.values())
        boxed_p = sum(e.box is not None for e in pred.entities.values())
        results[n].dims["locations"] = (_pr(len(m.located) / boxed_r if boxed_r else 0.0,
                                            len(m.located) / boxed_p if boxed_p else 0.0)
                                        if boxed_r or boxed_p else None)
    sides: dict[tuple[int, str], dict[str, float | None]] = {}
    for n, dim, side, questions in asked:
        scores = [next(verdicts).score if q is not None else 0.0 for q in questions]
        sides.setdefault((n, dim), {})[side] = sum(scores) / len(scores) if scores else None
    for (n, dim), got in sides.items():
        recall, precision = got["recall"], got["precision"]
        results[n].dims[dim] = None if recall is None and precision is None else _pr(recall or 0.0, precision or 0.0)
    return results


def summarize(images: list[ImageScore]) -> dict:
    """Mean recall, precision and F1 per dimension over the images that have it, and the overall."""
    out: dict = {}
    for dim in DIMENSIONS:
        present = [s.dims[dim] for s in images if s.dims.get(dim) is not None]
        out[dim] = ({k: round(sum(d[k] for d in present) / len(present), 4) for k in ("f1", "precision", "recall")}
                    | {"images": len(present)} if present else None)
    out["overall"] = round(sum(WEIGHTS[d] * out[d]["f1"] for d in DIMENSIONS if out[d]), 4)
    out["overall_max"] = round(sum(WEIGHTS[d] for d in DIMENSIONS if out[d]), 4)
    return out
