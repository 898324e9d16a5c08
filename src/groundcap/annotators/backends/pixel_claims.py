"""Verifier "pixel_claims": a caption's claims judged against the region's pixels (CPU, no model).

A thin verifier over ``qa.evidence.check_region`` (the rules live there), so the engine's second
opinion and QA judge claims alike: colour words, positions, "covering N%", counts against the
image's region labels, and quotes against the region's OCR text. A caption is rejected only for a
contradicted claim; one with nothing measurable is accepted and says so.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from groundcap.annotators.base import RegionCaption, Verdict, Verifier
from groundcap.annotators.registry import register
from groundcap.qa import claims, evidence


@register("verifier", "pixel_claims", needs=("skimage",),
          description="Checks a caption's colour, position, area, count and quoted-text claims against the "
                      "mask's pixels")
class PixelClaimsVerifier(Verifier):
    version = "4"  # 2: judged by qa.evidence (counts, quoted text, the box rule for positions); 3: shade words,
    # counts in words ("a dozen", "a pair of", up to twenty), vague quantities and materials unverifiable;
    # 4: gem and metal colours, two-hue compounds, a shade's every listed value
    model = "measured claims (CIE Lab colour shares, mask centroid and box, mask area, region labels, OCR text)"
    defaults = {f.name: f.default for f in fields(evidence.Options)}

    def verify(self, image: np.ndarray, regions: list[dict], captions: list[RegionCaption]) -> list[Verdict]:
        options = evidence.Options(**{name: getattr(self, name) for name in self.defaults})
        by_id = {r["region_id"]: r for r in regions}
        out = []
        for c in captions:
            text = claims.caption_text(c.short, c.detailed)
            verdicts = evidence.check_region(text, image, by_id[c.region_id], regions, options)
            problems = [evidence.explain(v) for v in verdicts if v["verdict"] == "contradicted"]
            checked = sum(v["verdict"] != "unverifiable" for v in verdicts)
            reason = ("; ".join(dict.fromkeys(problems))
                      or (f"checked {checked} claims" if checked else "no measurable claims"))
            out.append(Verdict(c.region_id, not problems, reason))
        return out
