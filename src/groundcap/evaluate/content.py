"""The semantic content of a grounded caption in PancapScore's five dimensions, read by rules.

A grounded caption names entities as ``<rN>phrase</rN>`` (``grounding``); each distinct N is one entity
instance, its tag the head noun of its first phrase and its location the box its caption gives it.
Attributes are the claims ``qa.claims`` reads in an entity's phrases and in the words right after a
mention ("<r1>a dog</r1> on the left"); a relation is two mentions in one sentence joined only by a
relation phrase ("<r1>the dog</r1> is to the left of <r2>the sofa</r2>"); the global state is what
the sentences that mention no entity say (image colours, counts, brightness, ...). Facts carry a
structured ``value`` the rule judge compares, and a ``template`` naming entities as ``{s}``/``{o}``
so a question can be put about the other caption's matching entities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from groundcap import grounding
from groundcap.qa import claims

Box = tuple[float, float, float, float]  # x, y, w, h in pixels

# global image state: axis -> words, longest first where one holds another
STATE = {
    "brightness": ("moderately bright", "bright", "dark", "dim"),
    "colorfulness": ("slightly colorful", "moderately colorful", "averagely colorful", "quite colorful",
                     "highly colorful", "extremely colorful", "muted"),
    "orientation": ("landscape", "portrait", "square"),
    "setting": ("indoors", "outdoors", "indoor", "outdoor"),
    "time": ("daytime", "nighttime", "night", "day"),
}
_STATE_WORD = {w: (axis, w.removesuffix("s") if axis == "setting" else w) for axis, ws in STATE.items() for w in ws}
_STATE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _STATE_WORD), key=lambda w: (-len(w), w))) + r")\b", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"[,;:]|\band\b|\bwhile\b|\bwhere\b")
_HEAD_CUT = re.compile(r"\s(?:of|with|reading|on|in|at|near|next|behind|holding|wearing|that|which|from|under|above)\s")
ATTRIBUTE_KINDS = ("color", "material", "position", "text", "count")
GENERIC_TAGS = frozenset({"region", "area", "part", "object", "thing"})


@dataclass(frozen=True)
class Entity:
    key: int  # the region id the caption's references use
    tag: str  # singular head noun of its first phrase
    phrase: str  # its first phrase, as written
    box: Box | None  # where the caption puts it (None: the caption gives no box)


@dataclass(frozen=True)
class Fact:
    """One fact: ``kind`` attribute | relation | global; ``value`` what the rule judge compares, e.g.
    ("color", "red"), ("relation", "left of"), ("state", "brightness", "dark"), ("sentence", text)."""

    kind: str
    template: str  # the fact in words, entities as {s} / {o}
    value: tuple
    subject: int | None = None
    object: int | None = None

    def text(self, subject: str = "", obj: str = "") -> str:
        return (self.template.replace("{s}", subject or f"entity {self.subject}")
                .replace("{o}", obj or f"entity {self.object}"))


@dataclass
class Content:
    text: str  # the grounded caption
    entities: dict[int, Entity] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)
    global_sentences: list[str] = field(default_factory=list)
    is_region: bool = False  # one region's caption (entity 0), not a grounded scene caption

    def of(self, kind: str) -> list[Fact]:
        return [f for f in self.facts if f.kind == kind]


def tag_of(phrase: str) -> str:
    """The head noun of an entity phrase: "a brown dog on the sofa" -> "dog", "gray text reading ..." -> "text"."""
    head = _HEAD_CUT.split(f" {claims_plain(phrase)} ", maxsplit=1)[0]
    labels = [c.value for c in claims.parse(head) if c.kind == "label"]
    if labels:
        return labels[-1]
    words = re.findall(r"[a-z]+", head.lower())
    return claims.singular(words[-1]) if words else ""


def claims_plain(text: str) -> str:
    return " ".join(grounding.plain(text).split())


def _placed(claim: claims.Claim) -> bool:
    """A colour word no list places, or a vague quantity ("several"), says nothing the rules can compare."""
    return claim.value[0] is not None if claim.kind in ("color", "count") else True


def _value(claim: claims.Claim) -> tuple:
    if claim.kind == "color":
        return ("color", claim.value[0])
    return (claim.kind, claim.value)


_SAYS = {"color": "{s} is {v}", "material": "{s} is {v}", "position": "{s} is {v}", "text": "{s} reads {v}",
         "count": "{s} shows {v}"}


def attribute_facts(text: str, subject: int) -> list[Fact]:
    """The attribute claims of ``text`` about entity ``subject`` (labels are the tag, not attributes)."""
    return [Fact("attribute", _SAYS[c.kind].replace("{v}", c.text), _value(c),
                 subject) for c in claims.parse(text) if c.kind in ATTRIBUTE_KINDS and _placed(c)]


def global_facts(sentence: str) -> list[Fact]:
    """What a sentence that names no entity says about the whole image; the sentence itself when no
    rule reads anything in it (a judge may still find it said elsewhere)."""
    facts = [Fact("global", c.text, _value(c)) for c in claims.parse(sentence)
             if c.kind in ("color", "count") and _placed(c)]
    facts += [Fact("global", m.group(0), ("state", *_STATE_WORD[m.group(1).lower()]))
              for m in _STATE.finditer(sentence)]
    return facts or [Fact("global", sentence, ("sentence", sentence))]


def sentences(text: str) -> list[str]:
    """``text`` cut at sentence ends outside references (a phrase may quote "a.b")."""
    spans = [(s, e) for s, e, _, _ in grounding.mentions(text)]
    cuts = [m for m in _SENTENCE_END.finditer(text) if not any(s < m.start() < e for s, e in spans)]
    out, start = [], 0
    for m in cuts:
        out.append(text[start:m.start()])
        start = m.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def region(caption: str) -> Content:
    """A region caption as the content of one entity (key 0): its label claims and attribute claims,
    the form DLC-Bench-style questions are put to."""
    text = claims_plain(caption)
    tag = tag_of(text)
    labels = {c.value for c in claims.parse(text) if c.kind == "label"} - GENERIC_TAGS
    facts = [Fact("attribute", "{s} is " + ("an " if label[0] in "aeiou" else "a ") + label, ("label", label), 0)
             for label in sorted(labels)]
    facts += attribute_facts(text, 0)
    unique = list({f.value: f for f in reversed(facts)}.values())[::-1]  # first wording of each value
    return Content(text, {0: Entity(0, tag, text, None)} if text else {}, unique, is_region=True)


def parse(text: str, boxes: dict[int, Box] | None = None) -> Content:
    """The content of a grounded caption; ``boxes`` maps its region ids to boxes."""
    boxes = boxes or {}
    content = Content(text)
    facts: dict[tuple, Fact] = {}

    def add(fact: Fact) -> None:
        facts.setdefault((fact.kind, fact.subject, fact.object, fact.value), fact)

    for sentence in sentences(text):
        found = grounding.mentions(sentence)
        if not found:
            content.global_sentences.append(sentence)
            for fact in global_facts(sentence):
                add(fact)
            continue
        for i, (_, end, key, phrase) in enumerate(found):
            if key not in content.entities:
                box = boxes.get(key)
                content.entities[key] = Entity(key, tag_of(phrase), claims_plain(phrase),
                                               None if box is None else tuple(float(v) for v in box))
            for fact in attribute_facts(claims_plain(phrase), key):
                add(fact)
            after = sentence[end:found[i + 1][0]] if i + 1 < len(found) else sentence[end:]
            relation = claims.relation_of(after) if i + 1 < len(found) else None
            if relation is not None:
                other = found[i + 1][2]
                if other != key:
                    add(Fact("relation", "{s} " + relation + " {o}", ("relation", relation), key, other))
                continue
            clause = _CLAUSE.split(grounding.plain(after), maxsplit=1)[0]
            for fact in attribute_facts(clause, key):
                add(fact)
    content.facts = list(facts.values())
    return content
