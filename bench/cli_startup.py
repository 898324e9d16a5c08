"""CLI start-up: ``groundcap --help`` and ``groundcap tag --help`` beside a bare ``python -c "import typer"``.

Every DVC stage starts the CLI, and so does every ``--help``: they must not load the pipeline's libraries
(datasets, scipy, torch, pyarrow) to print a page of text. The commands run in turn, A B A B ..., as
whole processes (interpreter start-up included); the figure is the median wall time and each one's ratio
to the baseline. A bare typer app printing a sub-command's help is the floor: typer renders help with rich,
which costs more than everything groundcap imports for it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from timing import table

BARE_APP = ("import typer\napp = typer.Typer()\n@app.command()\ndef a(x: int = 1):\n    'A.'\n"
            "@app.command()\ndef b(x: int = 1):\n    'B.'\napp(['a', '--help'])")
COMMANDS = {
    "python -c 'import typer' (baseline)": [sys.executable, "-c", "import typer"],
    "a bare typer app: a --help (the floor)": [sys.executable, "-c", BARE_APP],
    "groundcap --help": [sys.executable, "-m", "groundcap", "--help"],
    "groundcap tag --help": [sys.executable, "-m", "groundcap", "tag", "--help"],
}


def _once(argv: list[str]) -> float:
    """Wall seconds of one run of ``argv``."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
    return wall


def bench_cli_startup(runs: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # one unmeasured run each: the page cache, .pyc files
        _once(argv)
    for _ in range(runs):
        for name, argv in COMMANDS.items():
            samples[name].append(_once(argv))
    base = statistics.median(samples[next(iter(COMMANDS))])
    rows = [["command", "median wall s", "x baseline"]]
    for name, got in samples.items():
        wall = statistics.median(got)
        rows.append([name, f"{wall:.3f}", f"{wall / base:.2f}x"])
    print(f"CLI start-up, median of {runs} runs each, interleaved (target: within 3x of the baseline)")
    table(rows)
