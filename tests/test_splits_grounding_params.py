from collections import Counter
from pathlib import Path

import pytest
import yaml

from groundcap import grounding, params, splits


FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def alone(ids):
    """Each image its own group."""
    return {i: i for i in ids}


def test_split_is_deterministic_and_close_to_fractions():
    ids = [f"{i:016x}" for i in range(3000)]
    a = splits.assign(alone(ids), 7, FRACTIONS)
    assert a == splits.assign(alone(reversed(ids)), 7, FRACTIONS)
    counts = Counter(s for s, _ in a.values())
    assert abs(counts["train"] / 3000 - 0.8) < 0.03 and abs(counts["test"] / 3000 - 0.1) < 0.03
    assert splits.assign(alone(ids), 8, FRACTIONS) != a


def test_growing_the_dataset_never_moves_an_image():
    ids = [f"{i:016x}" for i in range(500)]
    fractions = {"train": 0.7, "validation": 0.15, "test": 0.15}
    small = splits.assign(alone(ids), 3, fractions)
    big = splits.assign(alone(ids + [f"x{i}" for i in range(2000)]), 3, fractions)
    assert all(big[i] == small[i] for i in ids)


def test_a_group_never_crosses_splits():
    groups = {f"img{i}": f"cluster{i // 5}" for i in range(1000)}  # 200 clusters of 5 near-duplicates
    got = splits.assign(groups, 11, FRACTIONS)
    by_group = {}
    for image, (split, _) in got.items():
        by_group.setdefault(groups[image], set()).add(split)
    assert all(len(s) == 1 for s in by_group.values())
    assert {s for s, _ in got.values()} == set(splits.SPLITS)


def test_tiny_dataset_still_fills_every_split():
    for seed in range(20):
        got = Counter(s for s, _ in splits.assign(alone("abcd"), seed, FRACTIONS).values())
        assert all(got[s] >= 1 for s in splits.SPLITS), (seed, got)
    groups = {"a": "g1", "b": "g1", "c": "g2", "d": "g3"}  # three groups: each split gets a whole group
    for seed in range(20):
        got = splits.assign(groups, seed, FRACTIONS)
        assert {s for s, _ in got.values()} == set(splits.SPLITS) and got["a"][0] == got["b"][0]


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="unknown splits"):
        splits.assign(alone("a"), 0, {"train": 1.0, "dev": 0.1})
    with pytest.raises(ValueError, match="non-negative"):
        splits.assign(alone("a"), 0, {"train": -1.0})


def test_grounding_refs_parse_unwrap_and_render():
    text = f"{grounding.ref(0, 'a cat')} sits left of {grounding.ref(3, 'a gray region')}."
    assert grounding.references(text) == [(0, "a cat"), (3, "a gray region")]
    assert grounding.is_well_formed(text)
    assert grounding.unwrap(text, {3}) == "a cat sits left of <r3>a gray region</r3>."
    assert grounding.plain(text) == "a cat sits left of a gray region."
    rendered = grounding.render_boxes(text, {0: [0, 0, 50, 20], 3: [50, 10, 50, 10]}, 100, 40)
    assert rendered == "a cat [0.000, 0.000, 0.500, 0.500] sits left of a gray region [0.500, 0.250, 1.000, 0.500]."
    assert not grounding.is_well_formed("<r1>open only")
    assert not grounding.is_well_formed("<r1>mismatched</r2>")
    with pytest.raises(ValueError):
        grounding.ref(1, "<r2>nested</r2>")


def test_repo_params_equal_packaged_defaults():
    repo = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    assert repo == params.defaults()


def test_params_override_and_typo_detection(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("split:\n  seed: 99\n  fractions: {train: 1.0}\n")
    p = params.load(f)
    assert p["split"]["seed"] == 99 and p["split"]["fractions"] == {"train": 1.0}
    assert p["segment"] == params.defaults()["segment"]
    f.write_text("segmnet:\n  work_side: 10\n")
    with pytest.raises(params.ParamsError, match="unknown parameter 'segmnet'"):
        params.load(f)
    with pytest.raises(params.ParamsError, match="not found"):
        params.load(tmp_path / "missing.yaml")
