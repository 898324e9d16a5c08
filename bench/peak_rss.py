"""Run a module as ``python -m`` would, then write this process's peak RSS (``VmHWM``, kB) to a file.

``ru_maxrss`` from ``wait4`` cannot measure a stage launched by the benchmark: Linux carries the
parent's high-water mark over fork and exec, so every stage started by a bench process that once held
2 GB would read 2 GB. ``VmHWM`` belongs to the address space that exec made fresh. ``OUT_FILE.seconds``
gets the module's wall time, for a caller that cannot time the process itself (a ``dvc.yaml`` cmd run by
``dvc repro``), and ``OUT_FILE.cpu`` its CPU seconds (its own and its children's): on a shared machine the wall
time follows the load, the CPU time much less.

    python bench/peak_rss.py OUT_FILE MODULE [ARGS...]
"""

import resource
import runpy
import sys
import time
from pathlib import Path

start = time.perf_counter()
out, module, *args = sys.argv[1:]
sys.argv = [module, *args]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status", encoding="ascii") as status:
        Path(out).write_text(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
    Path(out + ".seconds").write_text(f"{time.perf_counter() - start:.3f}")
    cpu = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    Path(out + ".cpu").write_text(f"{sum(r.ru_utime + r.ru_stime for r in cpu):.3f}")
