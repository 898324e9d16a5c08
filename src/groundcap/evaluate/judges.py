"""Judges: who reads the facts out of a caption and answers whether another caption states them.

PancapScore asks an LLM (Qwen2.5-14B in the paper) to extract each caption's content and to answer
yes/no questions about it; DLC-Bench has an LLM answer whether a description states each positive
and negative detail. A judge here does both jobs behind one interface, so the metrics do not care
which one runs:

- ``rules_minilm`` (the default, CPU, offline): content read by rules (``evaluate.content``, built
  on ``qa.claims``); a fact is stated when the other caption makes the same claim about the matched
  entity, contradicted when it makes a different claim of that kind (another colour, an incompatible
  position, the opposite relation); sentences no rule reads are compared by MiniLM similarity.
- ``llm`` (``evaluate.llm_judge``): the same questions put to a chat model through ``groundcap.vlm``.

Both use MiniLM sentence embeddings where PancapScore uses sentence embeddings: tag and phrase
similarity for entity matching.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from groundcap.evaluate.content import Box, Content, Fact, parse
from groundcap.qa import claims
from groundcap.qa.consistency import embedder
from groundcap.qa.vocabulary import CONVERSE, OPPOSITE

SENTENCE_MATCH = 0.8  # MiniLM cosine at which a sentence no rule reads counts as said by the other caption
FIT_TIE = 1e-6  # fit scores this close are a tie: the caption singles out no region


@dataclass(frozen=True)
class Question:
    """Does ``target`` state ``fact``? ``subject``/``object`` name the fact's entities as the target does."""

    fact: Fact
    target: Content
    subject: int | None = None
    object: int | None = None

    def statement(self, name=lambda key: f"entity {key}") -> str:
        return self.fact.text(name(self.subject) if self.subject is not None else "",
                              name(self.object) if self.object is not None else "")


@dataclass(frozen=True)
class FactJudgement:
    """A judge's answer on one fact of a reference: does the caption state it, does it state the contrary."""

    stated: bool
    contradicted: bool
    error: str | None = None  # the judge could not answer (an LLM reply that never parsed)

    @property
    def score(self) -> float:
        """PancapScore's two questions per fact: 0.5 for "stated", 0.5 for "the contrary is not"."""
        return 0.5 * self.stated + 0.5 * (not self.contradicted)


class Judge(ABC):
    name: str = ""

    def __init__(self) -> None:
        self._embedder = embedder("minilm")
        self._vectors: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> None:
        """Encode the texts not seen yet, in one batch (a call per text costs a forward pass each)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if new:
            self._vectors |= dict(zip(new, self._embedder.encode(new).astype(np.float64), strict=True))

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine of every text of ``a`` with every text of ``b`` (MiniLM)."""
        if not a or not b:
            return np.zeros((len(a), len(b)))
        self.embed([*a, *b])
        return np.array([[float(self._vectors[x] @ self._vectors[y]) for y in b] for x in a])

    def provenance(self) -> dict:
        return {"judge": self.name, "embedder": self._embedder.provenance(), "prompts": {}}

    @abstractmethod
    def contents(self, captions: Sequence[tuple[str, dict[int, Box]]]) -> list[Content]:
        """The content of each (grounded caption, boxes)."""

    @abstractmethod
    def check(self, questions: Sequence[Question]) -> list[FactJudgement]:
        """One verdict per question, in order."""

    @abstractmethod
    def fit(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[int | None]:
        """For each (caption, candidate descriptions): the index of the one candidate it fits best, None on a tie."""


# --- rules + MiniLM -------------------------------------------------------------------------------


def _values(target: Content, kind: str, subject: int | None, what: str) -> list:
    return [f.value[1:] if what == "state" else f.value[1] for f in target.facts
            if f.kind == kind and f.subject == subject and f.value[0] == what]


def rule_verdict(q: Question) -> FactJudgement | None:
    """The rules' verdict on ``q``; None for a sentence fact, which only the embedder can settle."""
    fact = q.fact
    what, value = fact.value[0], fact.value[1:]
    if what == "sentence":
        return None
    if fact.kind == "relation":
        said = {(f.subject, f.value[1], f.object) for f in q.target.of("relation")}
        said |= {(o, CONVERSE[r], s) for s, r, o in said if r in CONVERSE}
        relation = value[0]
        return FactJudgement((q.subject, relation, q.object) in said,
                       relation in OPPOSITE and (q.subject, OPPOSITE[relation], q.object) in said)
    subject = q.subject if fact.kind == "attribute" else None
    values = _values(q.target, fact.kind, subject, what)
    if what == "state":
        axis, word = value
        return FactJudgement((axis, word) in values, any(a == axis and w != word for a, w in values))
    if what == "count":
        n, noun = value[0]
        same = [v for v in values if v[1] == noun]
        return FactJudgement((n, noun) in same, any(v[0] != n for v in same))
    if what == "position":
        agree = [claims.compatible(value[0], v) for v in values]
        return FactJudgement(any(agree), bool(values) and not any(agree))
    if what == "text":
        agree = [claims.text_similarity(value[0], v) >= claims.TEXT_SIMILARITY for v in values]
        return FactJudgement(any(agree), bool(values) and not any(agree))
    return FactJudgement(value[0] in values, bool(values) and value[0] not in values)  # color, label


class RulesMiniLMJudge(Judge):
    """Rule-based facts and answers (``qa.claims``), MiniLM similarity for what rules cannot read."""

    name = "rules_minilm"

    def contents(self, captions):
        return [parse(text, boxes) for text, boxes in captions]

    def check(self, questions):
        verdicts: list[FactJudgement | None] = [rule_verdict(q) for q in questions]
        open_ = [i for i, v in enumerate(verdicts) if v is None]
        sentences = sorted({s for i in open_ for s in questions[i].target.global_sentences})
        if open_ and sentences:
            facts = sorted({questions[i].fact.value[1] for i in open_})
            self.embed([*facts, *sentences])
            sim = self.similarity(facts, sentences)
            best = {f: sim[k] for k, f in enumerate(facts)}
            column = {s: k for k, s in enumerate(sentences)}
            for i in open_:
                q = questions[i]
                row = best[q.fact.value[1]]
                stated = any(row[column[s]] >= SENTENCE_MATCH for s in q.target.global_sentences)
                verdicts[i] = FactJudgement(stated, False)
        return [v if v is not None else FactJudgement(False, False) for v in verdicts]

    def fit(self, items):
        """Fit = MiniLM cosine plus the share of comparable claims that agree (0.5 when none compare)."""
        out: list[int | None] = []
        self.embed([t for caption, candidates in items if caption.strip() for t in (caption, *candidates)])
        for caption, candidates in items:
            if not caption.strip() or not candidates:
                out.append(None)
                continue
            cos = self.similarity([caption], list(candidates))[0]
            mine = claims.parse(caption)
            shares = [claims.agreement(mine, claims.parse(c))[0] for c in candidates]
            score = cos + np.array([0.5 if s is None else s for s in shares])
            best = int(np.argmax(score))
            out.append(None if (np.delete(score, best) >= score[best] - FIT_TIE).any() else best)
        return out
