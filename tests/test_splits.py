from collections import Counter

import pytest

from groundcap import params, splits
from groundcap.params import validation

FRACTIONS = {"seed": 7, "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "sizes": None}


def alone(ids):
    """Each image its own group."""
    return {i: i for i in ids}


def split_of(assignment):
    return {image: a.split for image, a in assignment.items()}


def test_split_is_deterministic_and_close_to_fractions():
    ids = [f"{i:016x}" for i in range(3000)]
    a = splits.assign(alone(ids), FRACTIONS)
    assert a == splits.assign(alone(reversed(ids)), FRACTIONS)
    counts = Counter(split_of(a).values())
    assert abs(counts["train"] / 3000 - 0.8) < 0.03 and abs(counts["test"] / 3000 - 0.1) < 0.03
    assert splits.assign(alone(ids), {**FRACTIONS, "seed": 8}) != a


def test_growing_the_dataset_never_moves_an_image():
    ids = [f"{i:016x}" for i in range(500)]
    section = {"seed": 3, "fractions": {"train": 0.7, "validation": 0.15, "test": 0.15}, "sizes": None}
    small = splits.assign(alone(ids), section)
    big = splits.assign(alone(ids + [f"x{i}" for i in range(2000)]), section)
    assert all(big[i] == small[i] for i in ids)


def test_a_group_never_crosses_splits():
    groups = {f"img{i}": f"cluster{i // 5}" for i in range(1000)}  # 200 clusters of 5 near-duplicates
    got = splits.assign(groups, FRACTIONS)
    by_group = {}
    for image, a in got.items():
        by_group.setdefault(groups[image], set()).add(a.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert set(split_of(got).values()) == set(splits.SPLITS)


def test_tiny_dataset_still_fills_every_split():
    for seed in range(20):
        got = Counter(split_of(splits.assign(alone("abcd"), {**FRACTIONS, "seed": seed})).values())
        assert all(got[s] >= 1 for s in splits.SPLITS), (seed, got)
    groups = {"a": "g1", "b": "g1", "c": "g2", "d": "g3"}  # three groups: each split gets a whole group
    for seed in range(20):
        got = split_of(splits.assign(groups, {**FRACTIONS, "seed": seed}))
        assert set(got.values()) == set(splits.SPLITS) and got["a"] == got["b"]


def test_sizes_fill_held_out_splits_with_whole_groups_and_train_takes_the_rest():
    groups = {f"img{i}": f"g{i // 2}" for i in range(200)}  # 100 pairs
    section = {"seed": 1, "fractions": None, "sizes": {"validation": 20, "test": 10}}
    got = splits.assign(groups, section)
    counts = Counter(split_of(got).values())
    assert counts == {"train": 170, "validation": 20, "test": 10}
    # the held-out splits hold the highest keys: test above validation above train
    lowest = {s: min(a.key for a in got.values() if a.split == s) for s in counts}
    highest = {s: max(a.key for a in got.values() if a.split == s) for s in counts}
    assert highest["train"] < lowest["validation"] and highest["validation"] < lowest["test"]


def test_pinned_images_keep_their_split_when_sizes_grow_the_dataset():
    section = {"seed": 5, "fractions": None, "sizes": {"validation": 30, "test": 30}}
    old_ids = [f"old{i}" for i in range(300)]
    v1 = split_of(splits.assign(alone(old_ids), section))
    grown = alone(old_ids + [f"new{i}" for i in range(600)])
    unpinned = split_of(splits.assign(grown, section))
    assert any(unpinned[i] != v1[i] for i in old_ids)  # without pinning, counts would move images
    v2 = split_of(splits.assign(grown, section, pinned=v1))
    assert all(v2[i] == v1[i] for i in old_ids)
    assert Counter(v2.values()) == {"train": 840, "validation": 30, "test": 30}


def test_a_new_image_joins_its_pinned_group_or_is_left_out_when_it_bridges_two_splits():
    section = {"seed": 2, "fractions": {"train": 0.5, "test": 0.5}, "sizes": None}
    pinned = {"a": "test", "b": "train", "c": "test", "d": "train"}
    # new1 joins a's group, new2 b's; x is a near-duplicate of both c (test) and d (train)
    groups = {"a": "G1", "new1": "G1", "b": "G2", "new2": "G2", "c": "G3", "d": "G3", "x": "G3"}
    got = splits.assign(groups, section, pinned=pinned)
    assert got["new1"].split == "test" and got["new2"].split == "train"
    assert got["c"].split == "test" and got["d"].split == "train"
    assert got["x"].split is None and "several splits" in got["x"].reason


def test_human_test_takes_audited_images_and_keeps_their_groups_out():
    groups = {"a": "G", "b": "G", "c": "H"}
    got = splits.assign(groups, FRACTIONS, human={"a"})
    assert got["a"].split == splits.HUMAN_TEST
    assert got["b"].split is None and "human-test" in got["b"].reason
    assert got["c"].split in splits.SPLITS
    # a published image people audit later stays where it was published: no leak into a test set
    assert splits.assign(groups, FRACTIONS, human={"a"}, pinned={"a": "train"})["a"].split == "train"


def test_declared_source_groups_join_near_duplicate_groups():
    paths = {"f1": "videos/v1/0001.jpg", "f2": "videos/v1/0002.jpg", "f3": "videos/v2/0001.jpg", "p": "photos/p.jpg"}
    declared = splits.declared_groups(paths, r"^videos/([^/]+)/")
    assert declared == {"f1": "source:v1", "f2": "source:v1", "f3": "source:v2"}
    # f3 is a near-duplicate of p: v2's frames and the photo become one group, named after the source
    joined = splits.join_groups({"f1": "f1", "f2": "f2", "f3": "p", "p": "p"}, declared)
    assert joined == {"f1": "source:v1", "f2": "source:v1", "f3": "source:v2", "p": "source:v2"}
    got = split_of(splits.assign(joined, FRACTIONS))
    assert got["f1"] == got["f2"] and got["f3"] == got["p"]



@pytest.mark.parametrize("section, message", [
    ({"group_pattern": "("}, "split.group_pattern is '\\('; expected a regular expression"),
    ({"fractions": {"train": 0.9, "dev": 0.1}}, "split.fractions names 'dev'; allowed: train, validation, test"),
    ({"fractions": {"train": -1.0, "test": 2.0}}, r"split.fractions.train is -1.0; expected a number in \[0, 1\]"),
    ({"fractions": {"train": 0.5}}, "split.fractions sum to 0.5; they must sum to 1"),
    ({"sizes": {"test": 1}}, "set exactly one of them"),
    ({"fractions": None, "sizes": {"train": 9000}}, "split.sizes names 'train'; allowed: test, validation"),
    ({"fractions": None, "sizes": {"test": 1.5}}, "split.sizes.test is 1.5; expected an integer >= 0"),
])
def test_bad_targets_are_refused_at_load(section, message):
    p = params.defaults()
    p["split"].update(section)
    with pytest.raises(params.ParamsError, match=message):
        validation.check(p)
