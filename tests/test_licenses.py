"""The images' licence a release declares (card YAML and body, Croissant, COCO files) is what the sources state
per image, or an explicit override recorded in the card; an embedded release refuses, at ingest, images whose
terms forbid redistribution or derivatives."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

import source_fixtures as fx
from groundcap import licenses, params
from groundcap.cli.app import app
from groundcap.dataset_card import card, croissant
from groundcap.dataset_card.escape import literal
from groundcap.errors import ParamsError
from groundcap.pipeline import order
from groundcap.pipeline.stage import Context
from groundcap.sources import iter_source
from groundcap.stages import ingest as ingest_stage
from test_builders import PARAMS, PROVENANCE, QA, build

COCO_LICENSES = [  # COCO 2017's own list, as its instances_*.json state it
    {"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
     "name": "Attribution-NonCommercial-ShareAlike License"},
    {"url": "http://creativecommons.org/licenses/by-nc/2.0/", "id": 2, "name": "Attribution-NonCommercial License"},
    {"url": "http://creativecommons.org/licenses/by-nc-nd/2.0/", "id": 3,
     "name": "Attribution-NonCommercial-NoDerivs License"},
]
PERMISSIVE = ("public-domain", "public domain", "cc0")


def _coco(root: Path, ids: list[int]) -> str:
    """The COCO fixture with COCO's non-commercial licences, image n under ``ids[n]``."""
    source, _ = fx.write_coco(root)
    path = root / "instances.json"
    doc = json.loads(path.read_text())
    doc["licenses"] = COCO_LICENSES
    for image, licence in zip(doc["images"], ids, strict=True):
        image["license"] = licence
    path.write_text(json.dumps(doc))
    return source


def _stated(source: str) -> dict:
    """Images per licence the source states (no image is read)."""
    return dict(Counter(f.license for f in iter_source(source)))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("licenses") / "release")


def _declared(release: Path, stated: dict, **override) -> tuple[DatasetCard, list[str]]:
    """The card (YAML and body) and Croissant's ``license`` for images whose sources state ``stated``."""
    p = copy.deepcopy(PARAMS)
    p["release"].update(override)
    stages = list(order.ORDER)
    text = card.render(release, p, stages=stages, provenance=PROVENANCE, qa_summary=QA, changelog=[], plots=[],
                       licenses=stated)
    doc = croissant.render(release, p, stages=stages, provenance=PROVENANCE, qa_summary=QA, licenses=stated)
    assert "Annotations (masks, captions, QA fields)" in text and doc["license"][-1] == "annotations: cc-by-4.0"
    return DatasetCard(text), doc["license"][:-1]


def test_coco_non_commercial_images_never_declare_public_domain_or_cc0(release, tmp_path):
    stated = _stated(_coco(tmp_path / "one", [1, 1, 1]))
    assert stated == {"CC-BY-NC-SA-2.0": 3}
    declared, listed = _declared(release, stated)
    assert (declared.data.license, declared.data.get("license_name")) == ("cc-by-nc-sa-2.0", None)
    assert listed == ["CC-BY-NC-SA-2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"]
    yaml = str(declared.data.to_yaml()).lower()
    assert not any(word in yaml or word in " ".join(listed).lower() for word in PERMISSIVE)
    assert "licence the sources state for every image" in declared.text


def test_mixed_licences_declare_other_with_the_list(release, tmp_path):
    stated = _stated(_coco(tmp_path / "mixed", [1, 2, 1]))
    declared, listed = _declared(release, stated)
    assert declared.data.license == "other"
    assert declared.data.license_name == "cc-by-nc-2.0-and-cc-by-nc-sa-2.0"
    assert listed == ["CC-BY-NC-2.0", "https://creativecommons.org/licenses/by-nc/2.0/",
                      "CC-BY-NC-SA-2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"]
    assert f"({literal('CC-BY-NC-2.0')}, {literal('CC-BY-NC-SA-2.0')})" in declared.text
    assert f"| {literal('CC-BY-NC-SA-2.0')} | 2 |" in declared.text  # the per-image table


def test_a_source_that_states_no_licence_is_declared_unknown(release, tmp_path):
    stated = _stated(str(fx.sample_folder(tmp_path / "photos", 2)))
    assert stated == {None: 2}
    declared, listed = _declared(release, stated)
    assert (declared.data.license, declared.data.get("license_name"), listed) == ("unknown", None, ["unknown"])


def test_the_bundled_sample_is_declared_public_domain_and_cc0_as_its_source_states(release):
    stated = _stated("sample:")
    assert set(stated) == {"CC0-1.0", licenses.PUBLIC_DOMAIN}
    declared, listed = _declared(release, stated)
    assert (declared.data.license, declared.data.license_name) == ("other", "cc0-1.0-and-public-domain")


def test_an_override_needs_a_reason_and_is_recorded_in_the_card(release, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("release: {license: cc-by-4.0}\n")
    with pytest.raises(ParamsError, match="release.license_reason"):
        params.load(f)
    f.write_text("release: {license_name: mine}\n")
    with pytest.raises(ParamsError, match="applies only with release.license"):
        params.load(f)
    reason = "written permission from every photographer, 2026-11-02"
    declared, listed = _declared(release, _stated(_coco(tmp_path / "coco", [1, 1, 1])), license="cc-by-4.0",
                                 license_reason=reason)
    assert declared.data.license == "cc-by-4.0" and listed == ["cc-by-4.0"]
    assert f"declared by `release.license` over what the sources state (below), because: {literal(reason)}" \
        in declared.text
    assert f"| {literal('CC-BY-NC-SA-2.0')} | 3 |" in declared.text  # what the sources state stays listed


def test_embed_refuses_sa1b_before_any_model_stage_runs(tmp_path):
    source, _ = fx.write_sa1b(tmp_path / "sa")
    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["run", "--source", source, "--workdir", str(work), "-q"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "SA-1B-Research-License" in message and "forbid redistribution" in message
    assert "release.images: reference" in message and "release.license_reason" in message
    assert not (work / "work/tag").exists()


def test_embed_refuses_images_whose_terms_forbid_derivatives_unless_overridden(tmp_path):
    p = params.defaults() | {"source": _coco(tmp_path / "coco", [1, 3, 1])}
    with pytest.raises(ingest_stage.LicenseRefused, match="CC-BY-NC-ND-2.0.*forbid derivatives"):
        ingest_stage.STAGE.run(Context(root=tmp_path / "run", params=p, progress=False))
    p["release"] = {**p["release"], "license": "other", "license_reason": "the rights holder allows blurring"}
    ingest_stage.STAGE.run(Context(root=tmp_path / "run", params=p, progress=False))
    assert len(list((tmp_path / "run/work/ingest").glob("part-*.parquet"))) == 1
