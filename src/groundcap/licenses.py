"""Image licences: what a source states per image, read into one id, and what a release may declare from them.

A source states a licence per image as text and perhaps a link (COCO's ``licenses``, a Hub dataset's licence, the
sample's table, SA-1B's research licence); :func:`identify` turns a Creative Commons link or id into its SPDX id
(``CC-BY-NC-SA-2.0``) and keeps any other text as stated. :func:`declare` is the release's declaration from the
released images' licences: their one id when they all share it, ``other`` with the list when they differ,
``unknown`` when no source stated one, so a release never claims more rights than its sources give. Only an
explicit ``release.license`` (with ``release.license_reason``, recorded in the card) overrides that.
:func:`refusal` says why an image's terms keep its bytes out of an embedded release.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from groundcap.storage import parts

PUBLIC_DOMAIN = "public-domain"  # not a licence, so no SPDX id: the Creative Commons Public Domain Mark's sense
SA1B = "SA-1B-Research-License"  # Meta's SA-1B Dataset Research License: each user accepts it; no redistribution
NOT_STATED = "not stated"
LINKS = {PUBLIC_DOMAIN: "https://creativecommons.org/publicdomain/mark/1.0/",
         SA1B: "https://ai.meta.com/datasets/segment-anything/"}
NO_REDISTRIBUTION = frozenset({SA1B})
# the Hub's licence ids for datasets' images (docs/hub/repositories-licenses.md); anything else is "other"
HUB = frozenset({
    "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0",
    "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0",
    "odc-by", "odbl", "pddl", "etalab-2.0", "c-uda", "apache-2.0", "mit", "unlicense",
})
_CC = re.compile(r"creativecommons\.org/licenses/(by(?:-nc)?(?:-nd|-sa)?)/(\d\.\d)", re.IGNORECASE)
_CC_ID = re.compile(r"cc[- ]by((?:[- ]nc)?(?:[- ]nd|[- ]sa)?)[- ](\d\.\d)", re.IGNORECASE)
_CC0 = re.compile(r"creativecommons\.org/publicdomain/zero/1\.0|^cc0(?:[- ]1\.0)?$", re.IGNORECASE)
_PDM = re.compile(r"creativecommons\.org/publicdomain/mark/", re.IGNORECASE)


def identify(text: str | None, url: str | None = None) -> str | None:
    """The SPDX id of a Creative Commons licence named by ``url`` or ``text``, else ``text`` as stated (None: none)."""
    for value in (url or "", text or ""):
        if m := _CC.search(value):
            return f"CC-{m[1].upper()}-{m[2]}"
        if _CC0.search(value.strip()):
            return "CC0-1.0"
        if _PDM.search(value):
            return PUBLIC_DOMAIN
    if m := _CC_ID.fullmatch((text or "").strip()):
        return f"CC-BY{m[1].upper().replace(' ', '-')}-{m[2]}"
    return (text or "").strip() or None


def link(license: str) -> str | None:
    """Where a licence's terms are read: a Creative Commons deed, or a known statement's page."""
    if m := re.fullmatch(r"CC-(BY(?:-NC)?(?:-ND|-SA)?)-(\d\.\d)", license):
        return f"https://creativecommons.org/licenses/{m[1].lower()}/{m[2]}/"
    if license == "CC0-1.0":
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    return LINKS.get(license)


def refusal(license: str | None) -> str | None:
    """Why an image under ``license`` may not be embedded in a release (its bytes redistributed, blurred or
    re-encoded), or None when its stated terms allow it."""
    if license in NO_REDISTRIBUTION:
        return "forbid redistribution"
    if license and re.fullmatch(r"CC-BY(-NC)?-ND-\d\.\d", license):
        return "forbid derivatives (a blurred or re-encoded image is one)"
    return None


@dataclass(frozen=True)
class Declared:
    """The card's ``license`` (a Hub id, ``other`` or ``unknown``), ``license_name`` and ``license_link``;
    ``listed``: the released images' licences (``NOT_STATED`` where a source stated none); ``override``: the
    declaration is ``release.license``'s, not the sources'."""

    license: str
    name: str | None
    link: str | None
    listed: tuple[str, ...]
    override: bool = False


def _slug(license: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", license.lower()).strip("-")


def declare(release: Mapping, counts: Mapping[str | None, int]) -> Declared:
    """The release's image licence from ``counts`` (released images per licence their source stated, None: not
    stated), or ``release.license`` where the user set it (an override, recorded in the card)."""
    listed = tuple(sorted(NOT_STATED if name is None else name for name, n in counts.items() if n))
    if release.get("license"):
        return Declared(release["license"], release.get("license_name"), release.get("license_link"), listed, True)
    if not listed or listed == (NOT_STATED,):
        return Declared("unknown", None, None, listed)
    if len(listed) == 1 and _slug(listed[0]) in HUB:
        return Declared(_slug(listed[0]), None, None, listed)
    if len(listed) == 1:
        return Declared("other", _slug(listed[0]), link(listed[0]), listed)
    name = "-and-".join(_slug(x) for x in listed) if len(listed) <= 3 else f"{len(listed)}-image-licenses"
    return Declared("other", name, None, listed)


def override(release: Mapping) -> str | None:
    """The one licence name ``release.license`` gives every image (its ``license_name`` where it has one), for a
    format that names a licence per image (COCO's ``licenses``); None where the sources' own licences stand."""
    return (release.get("license_name") or release["license"]) if release.get("license") else None


def released(work: Path) -> dict[str | None, int]:
    """Released images (a split in ``work/split``) per licence their source stated (None: not stated), part by
    part: what the build's COCO files and the card declare."""
    counts: Counter[str | None] = Counter()
    for index in parts.list_parts(work / "split"):
        kept = {r["image_id"] for r in parts.read_part(work / "split", index, ["image_id", "split"]) if r["split"]}
        counts.update(r["license"] for r in parts.read_part(work / "ingest", index, ["image_id", "license"])
                      if r["image_id"] in kept)
    return dict(counts)
