"""The judge ``groundcap eval --judge NAME`` picks: the rule-based one or the LLM one (``judges``, ``llm_judge``)."""

from __future__ import annotations

from groundcap.evaluate.inputs import EvalInputError
from groundcap.evaluate.judges import Judge, RulesMiniLMJudge
from groundcap.evaluate.llm_judge import LLMJudge

JUDGES = ("rules_minilm", "llm")


def make(name: str, engine: str | None = None, model: str | None = None, options: dict | None = None,
         prompts_dir: str | None = None) -> Judge:
    """The judge ``name``; ``llm`` needs a VLM ``engine`` and ``model`` (``groundcap.vlm.chat.ENGINES``)."""
    if name == "rules_minilm":
        return RulesMiniLMJudge()
    if name == "llm":
        if not engine or not model:
            raise EvalInputError("--judge llm needs --judge-engine (vllm, openai, transformers) and --judge-model")
        return LLMJudge(engine, model, options or {}, prompts_dir)
    raise EvalInputError(f"unknown judge {name!r}; judges: {', '.join(JUDGES)}")
