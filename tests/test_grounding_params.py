from pathlib import Path

import pytest
import yaml

from groundcap import grounding, params


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
