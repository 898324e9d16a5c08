"""The ``llm`` judge: facts extracted and questions answered by a chat model, through ``groundcap.vlm``.

As PancapScore does with Qwen2.5-14B: the model lists each caption's attributes, relations and global
facts (prompt ``eval_extract``), and answers, for numbered statements, whether a paragraph states each
and whether it contradicts it (``eval_check``); for uniqueness it picks which region's description
a caption fits (``eval_pick``). Entities and their boxes still come from the caption's grounding
syntax, which needs no model. Every request goes out in one batch per step (``vlm.structured.ask``,
which re-asks only failed replies); a reply that never parses is counted as the judge's error in
the report, and the fact or question it concerned scores as unanswered.
"""

from __future__ import annotations

from collections.abc import Sequence

from groundcap import grounding, prompts
from groundcap.evaluate.content import Content, Fact, parse
from groundcap.evaluate.judges import FactJudgement, Judge
from groundcap.vlm import chat, structured

MAX_TOKENS = 2048


def numbered(text: str) -> str:
    """A grounded caption as the model reads it: ``phrase [entity N]``."""
    spans = grounding.mentions(text)
    out, last = [], 0
    for start, end, key, phrase in spans:
        out.append(text[last:start] + f"{phrase} [entity {key}]")
        last = end
    return "".join(out) + text[last:]


def _extracted(obj, entities: set[int]) -> dict:
    obj = structured.require(obj, attributes=list, relations=list)
    glob = obj.get("global") or []
    if not isinstance(glob, list):
        raise ValueError("key 'global' should be a list")
    for a in obj["attributes"]:
        structured.require(a, entity=int, fact=str)
        if a["entity"] not in entities:
            raise ValueError(f"attribute names entity {a['entity']}, which the caption does not mark")
    for r in obj["relations"]:
        structured.require(r, subject=int, object=int, fact=str)
        if {r["subject"], r["object"]} - entities:
            raise ValueError("a relation names an entity the caption does not mark")
    return obj


def _answers(obj, n: int) -> list[tuple[bool, bool]]:
    answers = structured.require(obj, answers=list)["answers"]
    if len(answers) != n:
        raise ValueError(f"expected {n} answers, got {len(answers)}")
    return [(structured.require(a, stated=bool, contradicted=bool)["stated"], a["contradicted"]) for a in answers]


def _pick(obj, n: int) -> int | None:
    region = structured.require(obj, region=(int, type(None)))["region"]
    if region is not None and not 1 <= region <= n:
        raise ValueError(f"region {region} is not one of 1..{n}")
    return None if region is None else region - 1


def _validator(check, n):
    """``check`` bound to this request's ``n`` (a late-binding lambda in a loop would see the last one)."""
    return lambda obj: check(obj, n)


class LLMJudge(Judge):
    name = "llm"

    def __init__(self, engine: str, model: str, options: dict, prompts_dir: str | None = None) -> None:
        super().__init__()
        self.engine = chat.engine(engine, model, options)
        self.prompts = {name: prompts.load(name, prompts_dir) for name in ("eval_extract", "eval_check", "eval_pick")}
        self.errors: list[str] = []

    def provenance(self) -> dict:
        return super().provenance() | {"judge": f"llm ({self.engine.describe()})",
                                       "prompts": {name: p.hash for name, p in self.prompts.items()},
                                       "prompt_hash": prompts.combined_hash(list(self.prompts.values()))}

    def _ask(self, texts: list[str], validators) -> list[structured.Answer]:
        requests = [chat.ChatRequest(t, max_tokens=MAX_TOKENS, json_mode=True) for t in texts]
        answers = structured.ask(self.engine, requests, validators)
        self.errors += [a.error for a in answers if not a.ok]
        return answers

    def contents(self, captions):
        contents = [parse(text, boxes) for text, boxes in captions]
        todo = [c for c in contents if c.text.strip()]
        answers = self._ask([self.prompts["eval_extract"].render(caption=numbered(c.text)) for c in todo],
                            [_validator(_extracted, set(c.entities)) for c in todo])
        for content, answer in zip(todo, answers, strict=True):
            facts: list[Fact] = []
            if answer.ok:
                obj = answer.value
                facts += [Fact("attribute", "{s} " + a["fact"], ("llm", a["fact"]), a["entity"])
                          for a in obj["attributes"]]
                facts += [Fact("relation", "{s} " + r["fact"] + " {o}", ("llm", r["fact"]), r["subject"], r["object"])
                          for r in obj["relations"] if r["subject"] != r["object"]]
                facts += [Fact("global", g, ("llm", g)) for g in obj.get("global") or [] if isinstance(g, str)]
            content.facts = list(dict.fromkeys(facts))
        return contents

    def check(self, questions):
        groups: dict[int, list[int]] = {}
        targets: dict[int, Content] = {}
        for i, q in enumerate(questions):
            groups.setdefault(id(q.target), []).append(i)
            targets[id(q.target)] = q.target
        keys = list(groups)
        texts = []
        for key in keys:
            name = (lambda _: "the region") if targets[key].is_region else (lambda k: f"entity {k}")
            lines = "\n".join(f"{n}. {questions[i].statement(name)}" for n, i in enumerate(groups[key], start=1))
            texts.append(self.prompts["eval_check"].render(paragraph=numbered(targets[key].text) or "(empty)",
                                                           statements=lines))
        answers = self._ask(texts, [_validator(_answers, len(groups[k])) for k in keys])
        verdicts: list[FactJudgement] = [FactJudgement(False, False)] * len(questions)
        for key, answer in zip(keys, answers, strict=True):
            for n, i in enumerate(groups[key]):
                verdicts[i] = (FactJudgement(*answer.value[n]) if answer.ok
                               else FactJudgement(False, False, answer.error))
        return verdicts

    def fit(self, items: Sequence[tuple[str, Sequence[str]]]):
        todo = [i for i, (caption, candidates) in enumerate(items) if caption.strip() and candidates]
        texts = [self.prompts["eval_pick"].render(
            caption=items[i][0], candidates="\n".join(f"{n}. {c}" for n, c in enumerate(items[i][1], start=1)))
            for i in todo]
        answers = self._ask(texts, [_validator(_pick, len(items[i][1])) for i in todo])
        out: list[int | None] = [None] * len(items)
        for i, answer in zip(todo, answers, strict=True):
            out[i] = answer.value if answer.ok else None
        return out
