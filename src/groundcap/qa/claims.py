"""The claims a caption makes that pixels or annotations can settle, read from its words alone.

``qa.evidence`` checks them against the pixels and ``qa.consistency`` compares two captions of one
region by them, so both read captions the same way, whichever model wrote them. Parsing is
conservative: a phrase that is not clearly a claim ("to the left of the dog", "one of them", colour
words inside quotes, "not red") is not read as one, since a misread claim can fail a true caption.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Any

from groundcap import colors, grounding
from groundcap.prompts import read_vocabulary
from groundcap.qa import vocabulary

KINDS = ("label", "color", "material", "position", "area", "count", "text", "relation")
TEXT_SIMILARITY = 0.8  # agreement(): two quoted texts this similar (``text_similarity``) say the same


@dataclass(frozen=True)
class Claim:
    """One claim: ``text`` is the caption's words, ``value`` what they assert, by kind:

    label: singular vocabulary noun; color: (name in ``colors.NAMES``, stated share 0-1 or None, the shade
    word when the caption names a shade, ``colors.shades``: "navy blue", "crimson"), with name None for a
    colour word no list places ("wine-colored"), which only an unverifiable verdict can follow;
    position: (row: top|middle|bottom or None, column: left|center|right or None); area: share of
    the image 0-1; count: (n, singular noun; "region" means regions of any label), n None for a vague
    quantity ("several dogs"); text: the quote; material: the material a word names ("wooden" -> "wood",
    ``vocabulary.MATERIALS``); relation: (subject region id, canonical relation, object region id), read
    between two ``<rN>`` references of a grounded caption ("<r1>a cup</r1> on top of <r2>a table</r2>").
    """

    kind: str
    text: str
    value: Any


# --- nouns: the vocabulary, its plurals, singular forms --------------------------------------------


def _plural(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    if last in vocabulary.IRREGULAR:
        last = vocabulary.IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    elif last.endswith("fe"):
        last = last[:-2] + "ves"
    elif last.endswith(("lf", "af", "rf")):
        last = last[:-1] + "ves"
    else:
        last += "s"
    return f"{head} {last}".strip()


_VOCABULARY = read_vocabulary("")
_SINGULAR = {_plural(n): n for n in (*_VOCABULARY, "region")} | {n: n for n in (*_VOCABULARY, "region")}


def singular(word: str) -> str:
    """Singular of a noun or label: vocabulary plurals exactly ("people" -> "person"), others by rule."""
    word = " ".join(word.casefold().split())
    if word in _SINGULAR:
        return _SINGULAR[word]
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "ches", "shes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w)))  # longest first


def _pattern(phrase: str) -> str:
    """A phrase with any run of spaces between its words: "a  pair of"."""
    return r"\s+".join(map(re.escape, phrase.split()))


# --- the phrases ---------------------------------------------------------------------------------

_QUOTE = re.compile(r'"([^"]*)"|\u201c([^\u201d]*)\u201d')
_SHARE = r"(?:\s*\((\d+(?:\.\d+)?)%\))?"
_NEXT_WORD = re.compile(r"\s+([a-z]+)", re.I)
_MULTIWORD_LABEL = re.compile(r"\b(?:" + _alternation(n for n in _SINGULAR if " " in n) + r")\b", re.I)
_UNPLACED = re.compile(r"\b([a-z]+)[- ](?:colou?red|toned|hued|tinted)\b", re.I)


@functools.cache
def _color_words() -> tuple[frozenset[str], list[re.Pattern], dict[str, int]]:
    """Basic names and shade words, per word count n the pattern of an n-word phrase and its stated share, and
    the first word of each name with the most words a name it starts has; built on first use, since the shade
    lists load with matplotlib."""
    words = frozenset((*colors.NAMES, "grey", *colors.shades()))
    longest = max(len(w.split()) for w in words)
    first: dict[str, int] = {}
    for w in words:
        head, *rest = w.split()
        first[head] = max(first.get(head, 0), 1 + len(rest))
    return words, [re.compile(r"([a-z]+" + r"[- ][a-z]+" * n + r")" + _SHARE, re.I) for n in range(longest)], first


_WORD = re.compile(r"(?<![\w'])[a-z]+(?![\w'])", re.I)


def _color_matches(text: str) -> list[re.Match]:
    """Every colour word or phrase, the longest at each word ("navy blue", not "navy" then "blue"), words
    joined by one space or hyphen ("reddish-brown" is "reddish brown"); a dictionary look-up per word, since
    one alternation of 2,000 phrases took as long as all the rest of ``parse``."""
    words, phrases, first = _color_words()
    tokens = list(_WORD.finditer(text))
    out, i = [], 0
    while i < len(tokens):
        for n in range(min(first.get(tokens[i].group().lower(), 0), len(tokens) - i), 0, -1):
            run = tokens[i:i + n]
            if all(text[a.end():b.start()] in (" ", "-") for a, b in zip(run, run[1:], strict=False)) and (
                    " ".join(t.group().lower() for t in run) in words):
                out.append(phrases[n - 1].match(text, run[0].start()))
                i += n
                break
        else:
            i += 1
    return out


def _colors(text: str) -> list[tuple[re.Match, tuple]]:
    """(match, claim value) of every colour word in ``text``, and of "X-colored" words no list places."""
    out = []
    labels = [m.span() for m in _MULTIWORD_LABEL.finditer(text)]
    for m in _color_matches(text):
        word = " ".join(m.group(1).lower().replace("-", " ").split())
        share = None if m.group(2) is None else float(m.group(2)) / 100
        after = _NEXT_WORD.match(text, m.end())
        if (after and after.group(1).lower() in colors.THING_NOUNS.get(word, ())) or any(
                s <= m.start() < e for s, e in labels):
            continue  # "a golden retriever", "olive oil", "an ice cream": the word names the thing
        if word in colors.shades():
            out.append((m, (colors.shades()[word][2], share, word)))
        else:
            out.append((m, (word.replace("grey", "gray"), share, None)))
    taken = [m.span() for m, _ in out]
    for m in _UNPLACED.finditer(text):
        if not any(s <= m.start() < e for s, e in taken):
            out.append((m, (None, None, None)))
    return out

_NEGATED = re.compile(r"\b(?:no|not|without|non)[\s-]+$", re.I)
_POSITION = re.compile(
    r"\b(?:at|on|in|along|near) the (?:very |far )?"
    r"((?:top|bottom|upper|lower)(?:[ -](?:left|right))?|left|right|cent(?:er|re)|middle)"
    r"(?: (?:side|edge|corner|half|part|area))?"
    r"( of (?:the|this) (?:image|picture|photo|photograph|frame|scene))?", re.I)
_AREA = re.compile(r"\bcover(?:s|ing) (\d+(?:\.\d+)?)% of\b", re.I)
_STOP = r"(?:of|the|a|an|and|or|with|in|on|at|to|by|for|from|is|are|than)\b"
_NOUN = _alternation(_SINGULAR)
_NUMBER = r"(?:\d+|" + _alternation(vocabulary.NUMBERS) + r")"
_MULTIPLE = _alternation(vocabulary.MULTIPLES)
_QUANTITY = (rf"{_NUMBER}(?:\s+(?:{_MULTIPLE}))?|a\s+(?:{_MULTIPLE})|{_pattern(vocabulary.PAIR)}|"
             + "|".join(map(_pattern, sorted(vocabulary.VAGUE, key=lambda w: (-len(w), w)))))
_COUNT = re.compile(r"(?<![\w(.,%-])(" + _QUANTITY + r")\s+((?:(?!" + _STOP + r")[a-z-]+\s+){0,2}?)("
                    + _NOUN + r")\b", re.I)
_MATERIAL = re.compile(r"\b(" + _alternation(vocabulary.MATERIALS) + r")\b", re.I)
_REL_WORDS = {p: name for name, phrases in vocabulary.RELATIONS.items() for p in phrases}
_RELATION = re.compile(r"^(?:(?:" + _alternation(vocabulary.RELATION_LEAD) + r")\s+)*"
                       r"(?:directly |just |partly |right )?(" + _alternation(_REL_WORDS) + r")(?:\s+(?:the|a|an))?$",
                       re.I)
_LABEL = re.compile(r"\b(" + _alternation(set(_SINGULAR) - {"region", "regions", "can"}) + r")\b", re.I)



def where(phrase: str) -> tuple[str | None, str | None]:
    """(row, column) a position word names: "upper left" -> ("top", "left"), "top" -> ("top", None)."""
    row, col = None, None
    for word in re.split(r"[ -]", phrase.lower()):
        r, c = vocabulary.AXES[word]
        row, col = r or row, c or col
    return row, col


def _is_position(m: re.Match, text: str) -> bool:
    """"on the left of the image" is a position; "on the left of the dog" is a relation."""
    return bool(m.group(2)) or not re.match(r"\s+of\b", text[m.end():])


def leading_position(text: str) -> Claim | None:
    """The position phrase ``text`` opens with ("on the left, ..."), if any: where composers put a
    region's position, right after its grounded phrase."""
    text = text.lstrip()
    m = _POSITION.match(text)
    return Claim("position", m.group(0), where(m.group(1))) if m and _is_position(m, text) else None


def _quantity(phrase: str) -> int | None:
    """The number a count phrase names: "three" 3, "2 dozen" 24, "a pair of" 2; None for "several"."""
    words = phrase.lower().split()
    if " ".join(words) == vocabulary.PAIR:
        return 2
    if words[-1] in vocabulary.MULTIPLES:
        first = 1 if words[0] == "a" else _quantity(words[0])
        return None if first is None else first * vocabulary.MULTIPLES[words[-1]]
    if words[0].isdigit():
        return int(words[0])
    return vocabulary.NUMBERS.get(" ".join(words))


def _count(m: re.Match) -> tuple[int | None, str] | None:
    """The value of a count match; None for "a pair of" a noun that names one thing as a pair
    ("a pair of scissors": a plural the vocabulary keeps as its label)."""
    n, noun = _quantity(m.group(1)), singular(m.group(3))
    if " ".join(m.group(1).lower().split()) == vocabulary.PAIR and " ".join(m.group(3).lower().split()) == noun:
        return None
    return n, noun


def relation_of(between: str) -> str | None:
    """The canonical relation when the words between two mentions are only a relation phrase."""
    m = _RELATION.match(" ".join(between.split()).lower())
    return _REL_WORDS[m.group(1)] if m else None


def _relations(text: str) -> list[tuple[int, Claim]]:
    found = grounding.mentions(text)
    out = []
    for (start, end, a, _), (next_start, next_end, b, _) in zip(found, found[1:], strict=False):
        if a != b and (relation := relation_of(text[end:next_start])) is not None:
            said = " ".join(grounding.plain(text[start:next_end]).split())
            out.append((start, Claim("relation", said, (a, relation, b))))
    return out


def relations(text: str) -> list[Claim]:
    """The relations of a grounded caption: two consecutive ``<rN>`` references of different regions
    joined only by a relation phrase ("<r1>the dog</r1> is to the left of <r2>the sofa</r2>")."""
    return [claim for _, claim in _relations(text)]


def _blank(text: str, spans) -> str:
    """``text`` with the spans spaced out, so later patterns skip them and offsets stay put."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def caption_text(short: str, detailed: str) -> str:
    """What is judged of a region caption, wherever it is judged: both of its sentences."""
    return f"{short}. {detailed}"


def parse(text: str) -> list[Claim]:
    """The claims of ``text`` in the order they appear (ties: ``KINDS`` order), each once; relations
    only when ``text`` is grounded (``relations``), the other kinds from its words."""
    return list(_parse(text))


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[Claim, ...]:
    """``parse``, remembered: one caption is read by the uniqueness rounds, the verifier and QA's checks alike."""
    found: list[tuple[int, int, Claim]] = []

    def add(kind: str, m: re.Match, value: Any) -> None:
        found.append((m.start(), KINDS.index(kind), Claim(kind, m.group(0).strip(), value)))

    for m in _QUOTE.finditer(text):
        quoted = (m.group(1) if m.group(1) is not None else m.group(2)).strip()
        if _normal(quoted):
            add("text", m, quoted)
    rest = _blank(text, [m.span() for m in _QUOTE.finditer(text)])
    positions = [m for m in _POSITION.finditer(rest) if _is_position(m, rest)]
    for m in positions:
        add("position", m, where(m.group(1)))
    found_colors = _colors(rest)
    for m, value in found_colors:
        if not _NEGATED.search(rest, 0, m.start()):
            add("color", m, value)
    for m in _AREA.finditer(rest):
        add("area", m, float(m.group(1)) / 100)
    for m in _COUNT.finditer(rest):
        if (value := _count(m)) is not None:
            add("count", m, value)
    nouns = _blank(rest, [m.span() for m in (*positions, *(m for m, _ in found_colors))])
    labels = list(_LABEL.finditer(nouns))
    for m in labels:
        add("label", m, singular(m.group(1)))
    things = _blank(nouns, [m.span() for m in labels if " " in m.group(1)])  # "a wine glass" names no material
    for m in _MATERIAL.finditer(things):
        if not _NEGATED.search(things, 0, m.start()):
            add("material", m, vocabulary.MATERIALS[m.group(1).lower()])
    found += [(start, KINDS.index("relation"), claim) for start, claim in _relations(text)]
    found.sort(key=lambda f: (f[0], f[1]))
    return tuple(dict.fromkeys(claim for _, _, claim in found))


# --- comparing two captions of one region ---------------------------------------------------------


def _normal(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def text_similarity(a: str, b: str) -> float:
    """Character similarity (difflib ratio) of casefolded alphanumerics; 1.0 when the shorter (3+
    characters) lies inside the longer: a caption may quote part of a sign, and OCR may miss part."""
    a, b = sorted((_normal(a), _normal(b)), key=len)
    if not a:
        return 0.0
    if len(a) >= 3 and a in b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b).ratio()


def compatible(a: tuple[str | None, str | None], b: tuple[str | None, str | None]) -> bool:
    """Two (row, column) positions agree on every axis both name."""
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _compare(kind: str, a: list[Claim], b: list[Claim]) -> tuple[bool, str] | None:
    """(agree, what each side says) for one kind, or None when the two are not comparable on it."""
    if kind == "label":
        sa, sb = {c.value for c in a}, {c.value for c in b}
        return bool(sa & sb), f"{', '.join(sorted(sa))!r} vs {', '.join(sorted(sb))!r}"
    if kind == "color":  # a model naming fewer colours does not disagree: one's main colour is enough
        na, nb = [c.value[0] for c in a if c.value[0]], [c.value[0] for c in b if c.value[0]]
        if not na or not nb:
            return None
        return (na[0] in nb or nb[0] in na), f"{', '.join(dict.fromkeys(na))!r} vs {', '.join(dict.fromkeys(nb))!r}"
    if kind == "material":  # one region said to be of two different materials: the models disagree
        ma, mb = list(dict.fromkeys(c.value for c in a)), list(dict.fromkeys(c.value for c in b))
        return bool(set(ma) & set(mb)), f"{', '.join(ma)!r} vs {', '.join(mb)!r}"
    if kind == "position":
        return compatible(a[0].value, b[0].value), f"{a[0].text!r} vs {b[0].text!r}"
    if kind == "relation":  # about the same two regions, relations that cannot both hold ("above", "below")
        said: dict[tuple, Claim] = {}
        for c in b:
            subject, relation, obj = c.value
            said.setdefault(c.value, c)
            if relation in vocabulary.CONVERSE:
                said.setdefault((obj, vocabulary.CONVERSE[relation], subject), c)
        pairs = {frozenset((s, o)) for s, _, o in said}
        mine = [c for c in a if frozenset((c.value[0], c.value[2])) in pairs]
        if not mine:
            return None
        clash = [(c, said[key]) for c in mine
                 if (key := (c.value[0], vocabulary.OPPOSITE.get(c.value[1]), c.value[2])) in said]
        return not clash, "; ".join(f"{x.text!r} vs {y.text!r}" for x, y in clash)
    if kind == "count":  # a vague quantity ("several") compares with nothing
        a, b = [c for c in a if c.value[0] is not None], [c for c in b if c.value[0] is not None]
        ca, cb = {c.value[1]: c for c in reversed(a)}, {c.value[1]: c for c in reversed(b)}  # first per noun
        shared = sorted(set(ca) & set(cb))
        if not shared:
            return None
        differ = [n for n in shared if ca[n].value != cb[n].value]
        return not differ, "; ".join(f"{ca[n].text!r} vs {cb[n].text!r}" for n in differ or shared)
    if kind == "text":
        return text_similarity(a[0].value, b[0].value) >= TEXT_SIMILARITY, f"{a[0].value!r} vs {b[0].value!r}"
    return None  # area: how much of the image a region covers is measured, never compared


def agreement(a: list[Claim], b: list[Claim], kinds: tuple[str, ...] = KINDS) -> tuple[float | None, list[str]]:
    """Share of the ``kinds`` both claim lists can be compared on where they agree (None: no such kind),
    and a line per disagreement, e.g. "color: 'red' vs 'blue'"."""
    results = []
    for kind in kinds:
        ka, kb = [c for c in a if c.kind == kind], [c for c in b if c.kind == kind]
        if ka and kb and (result := _compare(kind, ka, kb)) is not None:
            results.append((kind, *result))
    if not results:
        return None, []
    return sum(ok for _, ok, _ in results) / len(results), [f"{kind}: {says}" for kind, ok, says in results if not ok]
