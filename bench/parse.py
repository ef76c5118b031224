"""Parse + plan cost of the default planner on Chinese instructions (issue 15).

    python -m bench.parse [--n 1000] [--out bench/results]

* **Seed**: the seed demo's instruction (拿离杯子最近的水果，并递送一把水果刀) in the demo scene,
  requester at the office desk: parse alone, and parse + search + validation (``plan_sync``),
  ``--n`` runs each, p50/p99. The planner is reused, so its vocabulary is built once, as in a
  running brain on a steady world; ``cold`` is the first call (vocabulary and lexicon included).
* **Corpus**: every entry of ``bench/corpus/zh.yaml`` read as meant or not, and its parse time.

Prints the figures and writes ``parse.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench import corpus_cases, scenes
from robobus.brain_agent.errors import BrainError
from robobus.brain_agent.planners.symbolic import SymbolicPlanner

ROOT = Path(__file__).resolve().parents[1]
SEED = "拿离杯子最近的水果，并递送一把水果刀"
ORIGIN = "officeDesk"


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    """p50/p99/mean of ``n`` calls, in milliseconds."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {"n": n, "p50_ms": samples[n // 2], "p99_ms": samples[min(n - 1, int(n * 0.99))],
            "mean_ms": statistics.fmean(samples)}


def seed(n: int) -> dict[str, Any]:
    ctx = scenes.demo()
    ctx.origin = ORIGIN
    planner = SymbolicPlanner()
    t0 = time.perf_counter()
    plan = planner.plan_sync(SEED, ctx)
    cold = (time.perf_counter() - t0) * 1e3
    steps = [f"{s.robot} {s.skill}({', '.join(map(str, s.args.values()))})" for s in plan.steps]
    return {"text": SEED, "origin": ORIGIN, "cold_ms": cold, "steps": steps,
            "parse": timed(lambda: planner.parse_sync(SEED, ctx), n),
            "parse_plan": timed(lambda: planner.plan_sync(SEED, ctx), n)}


def corpus() -> dict[str, Any]:
    path = corpus_cases.CORPUS / "zh.yaml"
    entries = corpus_cases.load(path)
    origins = [raw.get("origin") for raw in yaml.safe_load(path.read_text())]
    right, times = 0, []
    for entry, origin in zip(entries, origins, strict=True):
        ctx = entry.ctx()
        ctx.origin = origin
        planner = SymbolicPlanner()
        planner.parser_for(ctx)  # the vocabulary, built once per scene in a brain
        t0 = time.perf_counter()
        try:
            got: Any = corpus_cases.meaning(planner.parse_sync(entry.text, ctx), ctx)
        except BrainError as exc:
            got = exc.code
        times.append((time.perf_counter() - t0) * 1e3)
        want = entry.error if entry.goals is None else corpus_cases.meaning(entry.goals, ctx)
        right += got == want
    times.sort()
    return {"entries": len(entries), "right": right, "parse_bind_p50_ms": times[len(times) // 2],
            "parse_bind_max_ms": times[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    row = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
           "seed": seed(args.n), "corpus_zh": corpus()}
    s, c = row["seed"], row["corpus_zh"]
    print(f"seed {SEED} (origin {ORIGIN}): {'; '.join(s['steps'])}")
    print(f"  cold (vocabulary + lexicon + parse + plan): {s['cold_ms']:.2f} ms")
    for key in ("parse", "parse_plan"):
        f = s[key]
        print(f"  {key:10s} n={f['n']}: p50 {f['p50_ms']:.3f} ms, p99 {f['p99_ms']:.3f} ms")
    print(f"corpus zh: {c['right']}/{c['entries']} read as meant; parse + bind p50 "
          f"{c['parse_bind_p50_ms']:.3f} ms, max {c['parse_bind_max_ms']:.3f} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parse.json").write_text(json.dumps(row, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
