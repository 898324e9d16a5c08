"""README's "Use it with" snippets, run as written on a built release (only the path is replaced).

FiftyOne's and Label Studio's run in .venv-eco: tests/test_fiftyone.py runs the FiftyOne block after the
export command it shows, tests/test_labelstudio_live.py starts the server with the flags shown.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from test_builders import RECORDS, build

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = "path/to/release"


def snippets(language: str) -> list[str]:
    """The ``language`` code blocks of README's "Use it with" section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Use it with\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def run(snippet: str, release: Path) -> str:
    """Execute a Python snippet with the release's path in place of the placeholder; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.replace(PLACEHOLDER, str(release)), "README.md", "exec"), {})
    return out.getvalue()


PYTHON = [s for s in snippets("python") if "fiftyone" not in s]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("readme") / "release")


def test_the_section_has_a_snippet_per_tool():
    tools = ["datasets", "groundcap", "webdataset", "wids", "mlcroissant", "pycocotools"]
    assert [next(t for t in tools if f"import {t}" in s or f"from {t}" in s) for s in PYTHON] == tools
    assert any("groundcap export fiftyone" in s for s in snippets("bash"))
    assert any("label-studio start" in s for s in snippets("bash"))


@pytest.mark.parametrize("snippet", PYTHON, ids=[s.split("import ", 1)[1].split()[0] for s in PYTHON])
def test_snippet_runs(snippet, release, tmp_path, monkeypatch):
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids"))  # wids copies shards to a cache folder
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    printed = run(snippet, release)
    captions = [r["scene_caption"] for rs in RECORDS.values() for r in rs]
    captions += [g["short_caption"] for rs in RECORDS.values() for r in rs for g in r["regions"]]
    assert any(caption in printed for caption in captions), printed  # it read a real record
