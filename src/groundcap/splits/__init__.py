"""Deterministic, seeded, group-aware train/validation/test assignment by hash, not by position.

A group's split depends only on the seed and its group id: ``key = sha256(seed:group)`` read as a
number in [0, 1). Every image of a group (a near-duplicate cluster from ``work/dedup``, joined with
the source group ``split.group_pattern`` declares, e.g. the frames of one video) lands in the group's
split, so nothing near-identical crosses train/validation/test; an image alone is its own group.

Targets are either ``fractions`` (the key is cut at the cumulative fractions: the same group lands in
the same split in every run and in every larger version of the dataset) or ``sizes`` (image counts
for validation and test, taken from the highest keys; train takes the rest), like SA-Pancap's
9,000 / 500 / 130. A count depends on how many images there are, so sizes are only stable across
versions together with ``pinned``: the splits of the previous release, which its images keep
whatever the targets say. A new image that joins a pinned group goes where the group is; one that
would join groups of different pinned splits is left out with its reason, so no release ever moves
an image the previous one published.

``human_test`` is not drawn by hash: it holds the new images people audited and accepted (or
corrected), like SA-Pancap's human-curated test set; the rest of their groups stay out. With a size
(``audit.human_test_size``) it takes exactly that many of them, the lowest ``key(image_id)`` first,
when enough exist; the accepted images it does not take are split like any other.

Tiny datasets can leave a fraction split empty by chance; when there are enough free groups, each
empty split takes the free group whose key lies nearest to its interval (deterministic, and only
ever applied while a split would otherwise be empty).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from typing import NamedTuple

SPLITS = ("train", "validation", "test")  # drawn by hash
HUMAN_TEST = "human_test"  # audited by people (groundcap.audit)
ALL_SPLITS = (*SPLITS, HUMAN_TEST)
HELD_OUT = ("test", "validation")  # what `sizes` may name, filled in this order from the highest keys


class Assignment(NamedTuple):
    split: str | None  # None: not released
    key: float | None  # the group's hash key (None for human_test, which is not drawn)
    reason: str | None  # why an image is not released


def key(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def declared_groups(paths: Mapping[str, str], pattern: str | None) -> dict[str, str]:
    """``image_id -> source group`` for the images whose source path matches ``pattern``.

    The group is the pattern's first capture group (the whole match when it has none), so
    ``"^(.*)/[^/]+$"`` groups images by folder and ``"(vid\\d+)_"`` by video.
    """
    if not pattern:
        return {}
    regex = re.compile(pattern)  # the split stage's param types checked split.group_pattern at load
    out = {}
    for image, path in paths.items():
        if match := regex.search(path or ""):
            out[image] = "source:" + (match.group(1) if regex.groups else match.group(0))
    return out


def join_groups(near_duplicates: Mapping[str, str], declared: Mapping[str, str]) -> dict[str, str]:
    """``image_id -> group``: near-duplicate groups and declared source groups joined (union-find).

    A joined group is named after its smallest declared source group, else its near-duplicate group,
    so a declared group keeps its name (and its key) however many images it gains.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = x = parent[parent[x]]
        return x

    for image, group in near_duplicates.items():
        parent[find(image)] = find(f"dup:{group}")
        if image in declared:
            parent[find(image)] = find(declared[image])
    named: dict[str, list[str]] = defaultdict(list)  # root -> its declared source groups
    for image, source in declared.items():
        if image in near_duplicates:
            named[find(image)].append(source)
    # a root without a declared group holds exactly one near-duplicate group: its own name
    return {image: min(named.get(find(image), ()), default=group) for image, group in near_duplicates.items()}


def assign(
    groups: Mapping[str, str],
    section: Mapping,
    *,
    pinned: Mapping[str, str] | None = None,
    human: Collection[str] = frozenset(),
    human_size: int | None = None,
) -> dict[str, Assignment]:
    """An ``Assignment`` for every image of ``groups`` (``image_id -> group id``).

    ``section`` is the params' ``split`` section (seed, fractions or sizes); ``pinned`` maps the
    images of the previous release to their split there; ``human`` holds the images people audited
    and accepted, of which ``human_test`` takes ``human_size`` (None: all). The targets (exactly one of
    fractions and sizes) are checked by the split stage (``SplitStage.check_params``) when params load.
    """
    seed, pinned = int(section["seed"]), pinned or {}
    members: dict[str, list[str]] = defaultdict(list)
    for image, group in groups.items():
        members[group].append(image)
    free_human = sorted((i for i in human if i in groups and not any(m in pinned for m in members[groups[i]])),
                        key=lambda i: (key(i, seed), i))
    human = set(free_human[:human_size])
    out: dict[str, Assignment] = {}
    free: dict[str, float] = {}  # groups the targets decide, with their keys
    for group in sorted(members):
        images, k = members[group], key(group, seed)
        old = sorted({pinned[i] for i in images if i in pinned})
        for image in images:
            if len(old) > 1:
                out[image] = Assignment(pinned[image], k, None) if image in pinned else Assignment(
                    None, k, f"near-duplicate of images in several splits of the previous release ({', '.join(old)})")
            elif old:
                out[image] = Assignment(old[0], k, None)
            elif any(i in human for i in images):
                out[image] = Assignment(HUMAN_TEST, None, None) if image in human else Assignment(
                    None, k, "near-duplicate of a human-test image")
            else:
                free[group] = k
    taken = Counter(a.split for a in out.values() if a.split)
    cut = _by_fractions(free, section["fractions"], taken) if section.get("fractions") is not None else \
        _by_sizes(free, members, section["sizes"], taken)
    for group, split in cut.items():
        out.update({image: Assignment(split, free[group], None) for image in members[group]})
    return out


def _bounds(fractions: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    total = sum(fractions.get(s, 0.0) for s in SPLITS)
    bounds, low = {}, 0.0
    for s in SPLITS:
        high = low + fractions.get(s, 0.0) / total
        bounds[s] = (low, high)
        low = high
    bounds[SPLITS[-1]] = (bounds[SPLITS[-1]][0], 1.0)
    return bounds


def _by_fractions(free: Mapping[str, float], fractions: Mapping[str, float], taken: Counter) -> dict[str, str]:
    bounds = _bounds(fractions)
    split_of = {g: next(s for s in SPLITS if bounds[s][0] <= k < bounds[s][1] or k == 1.0) for g, k in free.items()}
    wanted = [s for s in SPLITS if bounds[s][1] > bounds[s][0]]
    if len(free) >= len(wanted):
        for split in wanted:
            counts = Counter(split_of.values())
            if counts[split] or taken[split]:
                continue
            low, high = bounds[split]
            donors = [g for g, s in split_of.items() if counts[s] > 1]
            if donors:
                nearest = min(donors, key=lambda g: (min(abs(free[g] - low), abs(free[g] - high)), g))
                split_of[nearest] = split
    return split_of


def _by_sizes(free: Mapping[str, float], members: Mapping[str, list], sizes: Mapping[str, int],
              taken: Counter) -> dict[str, str]:
    """Held-out splits take whole groups from the highest keys until their count is reached."""
    order = sorted(free, key=lambda g: (-free[g], g))
    split_of, at = {}, 0
    for split in HELD_OUT:
        need = sizes.get(split, 0) - taken[split]
        while need > 0 and at < len(order):
            split_of[order[at]] = split
            need -= len(members[order[at]])
            at += 1
    split_of.update({g: "train" for g in order[at:]})
    return split_of
