"""Run a module under cProfile and write its stats when it exits (SIGTERM included, as the
agents stop cleanly on it): ``python -m bench.profiled OUT.prof MODULE ARGS...``.

``bench.brain --throughput`` runs the brain this way when ``BENCH_BRAIN_PROFILE`` names a file
(issue 16, item 2); read it with ``python -m bench.profiled --show OUT.prof``.

The profile counts CPU time (``time.process_time``), not wall time: with wall time, the event
loop's idle waits landed on whichever coroutine frame was open (``Bus.connect`` showed 1.8 s
of 11 in one run), and a loaded machine's preemptions on whatever ran.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import sys
import time


def main() -> None:
    if sys.argv[1] == "--show":
        stats = pstats.Stats(sys.argv[2])
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
        return
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        prof.disable()
        prof.dump_stats(out)


if __name__ == "__main__":
    main()
