"""Scoring captioning models on a release split: PancapScore-style scene scores, DLC-Bench-style region
scores and URECA-style uniqueness, by a rule-based or an LLM judge (``groundcap eval``)."""

from __future__ import annotations

from pathlib import Path

from groundcap.evaluate import report
from groundcap.evaluate.inputs import read_predictions, read_reference
from groundcap.evaluate.judges import Judge, RulesMiniLMJudge


def run(release: str, split: str, predictions: list[Path], judge: Judge, output: Path,
        rules: RulesMiniLMJudge | None = None) -> dict:
    """Score each predictions file on ``split`` of ``release``, write ``output``; the report. With ``rules``,
    each run also reports how often ``judge`` agrees with the rule judge."""
    references = read_reference(release, split)
    names = [Path(p).name for p in predictions]
    if len(set(names)) != len(names):
        names = [str(p) for p in predictions]
    runs = {name: report.evaluate(judge, references, read_predictions(path, references), rules)
            for name, path in zip(names, predictions, strict=True)}
    result = {"release": str(release), "split": split, "judge": judge.provenance(), "runs": runs}
    report.write(output, result)
    return result
