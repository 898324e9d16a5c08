"""Timing and printing shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

LONG_RUN_S = 20.0  # a run longer than this is not repeated: its noise is small beside it, and repeats cost minutes


def best(fn: Callable[[], object], repeat: int, results: list | None = None) -> float:
    """Best wall time of ``repeat`` runs of ``fn`` (fewer when one takes over ``LONG_RUN_S``);
    ``results``, when given, gets each run's return value, so a check can use the timed output."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
        if results is not None:
            results.append(value)
        if times[-1] > LONG_RUN_S:
            break
    return min(times)


def table(rows: list[list[str]]) -> None:
    """Print ``rows`` as aligned columns: the first left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        print("  " + "  ".join(cells))
