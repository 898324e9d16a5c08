"""``groundcap export fiftyone`` without FiftyOne (the main venv): its default name and its error.
The export itself runs against the real FiftyOne in tests/test_fiftyone.py (.venv-eco)."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from groundcap.cli.app import app
from test_builders import PARAMS, build


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("export") / "release")


def test_the_fiftyone_export_is_named_after_the_release(release, tmp_path):
    from groundcap.export.fiftyone import default_name  # fiftyone itself is only imported to export

    assert default_name(release) == f"{PARAMS['release']['name']}-{PARAMS['release']['version']}"
    assert default_name(tmp_path) == tmp_path.name


def test_the_fiftyone_export_without_fiftyone_says_how_to_install_it(release):
    if importlib.util.find_spec("fiftyone") is not None:
        pytest.skip("fiftyone is installed here (.venv-eco): tests/test_fiftyone.py exports for real")
    result = CliRunner().invoke(app, ["export", "fiftyone", str(release)])
    assert result.exit_code == 2 and "pip install 'groundcap[fiftyone]'" in result.output
