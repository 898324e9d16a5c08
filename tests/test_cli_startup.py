"""What printing the CLI's help loads: only the CLI and the stage order, none of the pipeline's libraries.

Every DVC stage and every ``--help`` starts the CLI; it used to import 92 of the package's modules,
datasets and scipy among them, before printing a line (bench/cli_startup.py times it).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from groundcap.pipeline import order

HEAVY = ("datasets", "scipy", "torch", "pyarrow", "pyarrow.dataset", "numpy", "polars", "PIL", "cv2", "yaml")
EXPECTED = {"groundcap", "groundcap.cli", "groundcap.cli.app", "groundcap.cli.audit", "groundcap.cli.common",
            "groundcap.cli.export", "groundcap.cli.publish", "groundcap.credentials", "groundcap.errors",
            "groundcap.pipeline", "groundcap.pipeline.order"}


def _loaded(*argv: str) -> tuple[str, list[str]]:
    script = ("import json, sys\nfrom groundcap.cli.app import app\n"
              "try:\n    app(sys.argv[1:], prog_name='groundcap')\n"
              "except SystemExit:\n    pass\nprint(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, check=True)
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["tag", "--help"], ["run", "--help"], ["audit", "--help"],
                                  ["publish", "--help"]])
def test_help_imports_only_the_cli_and_the_stage_order(argv):
    text, modules = _loaded(*argv)
    assert "Usage" in text
    assert {m for m in modules if m.startswith("groundcap")} == EXPECTED
    assert not [m for m in HEAVY if m in modules]


def test_the_stage_commands_and_their_help_come_from_the_order():
    text, _ = _loaded("--help")
    for name in order.NAMES:
        assert name in text
    text, _ = _loaded("redact", "--help")
    assert "Privacy pass" in text


def test_each_stage_module_declares_the_stage_of_its_name():
    assert [stage.name for stage in order.stages()] == list(order.NAMES)
