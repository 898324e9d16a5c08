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


def test_box_labels_render_many_boxes_at_once_as_one_at_a_time():
    """Build formats every box of a part in one call; each label is what ``min(max(c, 0.0), 1.0)`` and a
    3-decimal f-string give one coordinate at a time (clipped, -0.0 and NaN as they were)."""
    boxes = [[0, 0, 50, 20], [-0.0, -3, 5e-4, 1e9], [float("nan"), 1, 2, 3], [99.99949, 0.0004999, 0.0005, 0.00050001]]
    widths, heights = [100, 100, 7, 100], [40, 7, 7, 7]
    expected = ["[" + ", ".join(f"{min(max(c, 0.0), 1.0):.3f}" for c in (x / w, y / h, (x + bw) / w, (y + bh) / h))
                + "]" for (x, y, bw, bh), w, h in zip(boxes, widths, heights, strict=True)]
    assert grounding.box_labels(boxes, widths, heights) == expected
    assert expected[:2] == ["[0.000, 0.000, 0.500, 0.500]", "[-0.000, 0.000, 0.000, 1.000]"]
    with pytest.raises(ValueError, match="must be positive"):
        grounding.render_boxes("<r1>a cat</r1>", {1: [0, 0, 1, 1]}, 0, 10)


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
