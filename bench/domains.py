"""The six domain scenarios (issue 15) over both transports: every combination, timed.

    python -m bench.domains [--transports zmq,mqtt] [--speed 20] [--repeat 1] [--jobs 1]
                            [--only garden_harvest,...] [--all] [--out bench/results]

``--all`` runs every shipped scenario (warehouse_50 and mcp_skills included) on both transports:
the suite runs each on one transport only.

Each run is ``robobus scenario run`` as a library call (:func:`run_scenario`): hub or Mosquitto,
memory, brain (symbolic planner) and one edge per robot as separate processes. One
``robobus hub`` and one private Mosquitto serve all runs of their transport, each run under its
own topic prefix, as in ``tests/scenarios/test_domains.py``. Prints one line per run and
writes ``domains.json`` (verdict, wall time, makespan, replans, preemptions, skill outcomes).
``--jobs N`` runs N scenarios of a transport at once. Exit status 1 if any run failed.

The suite runs each domain on one transport only (:data:`SUITE`); this runs all twelve.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from robobus import testing
from robobus.launch.runner import RunOptions, RunResult, run_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
#: scenario file stem -> its domain
DOMAINS: dict[str, str] = {
    "garden_harvest": "garden", "hospital_rounds": "hospital", "warehouse_orders": "warehouse",
    "office_mail": "office", "kitchen_service": "kitchen", "workshop_tools": "workshop",
}
TRANSPORTS = ("zmq", "mqtt")
#: the suite's split: each domain on one transport, alternately (three on each)
SUITE: dict[str, str] = {name: TRANSPORTS[i % 2] for i, name in enumerate(DOMAINS)}
SPEED = 20.0


def path_of(name: str) -> Path:
    return SCENARIOS / f"{name}.yaml"


async def run_one(name: str, bus_url: str, speed: float, report_dir: Path) -> RunResult:
    """One scenario on an already-running bus, under a fresh topic prefix."""
    opts = RunOptions(bus_url=bus_url, speed=speed, report_dir=report_dir,
                      prefix=f"rbd{secrets.token_hex(3)}")
    return await run_scenario(path_of(name), opts)


def row(name: str, transport: str, result: RunResult, wall_s: float) -> dict[str, Any]:
    """What a run measured, for the table and the JSON file."""
    s = result.summary
    failures = [f"{r.expect}: {r.reason}" for r in result.failures()]
    return {"scenario": name, "domain": DOMAINS.get(name, "shipped"), "transport": transport,
            "passed": result.passed, "wall_s": round(wall_s, 2),
            "makespan_s": s.get("makespan_s"), "replans": s.get("replans"),
            "preemptions": s.get("preemptions"), "skills": s.get("skills"),
            "error": result.error, "failures": failures}


@contextlib.contextmanager
def bus(transport: str, directory: Path) -> Iterator[str]:
    """A hub process or a private Mosquitto for the duration."""
    if transport == "zmq":
        with testing.hub() as url:
            yield url
    else:
        with testing.mosquitto(directory=directory) as url:
            yield url


async def run_transport(transport: str, names: list[str], args: argparse.Namespace,
                        work: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    limit = anyio.CapacityLimiter(args.jobs)

    async def one(name: str, rep: int, url: str) -> None:
        async with limit:
            start = time.monotonic()
            result = await run_one(name, url, args.speed, work / f"{transport}-{name}-{rep}")
            r = row(name, transport, result, time.monotonic() - start)
            rows.append(r)
            verdict = "PASS" if r["passed"] else "FAIL"
            print(f"{verdict} {name:18} {transport:4} wall {r['wall_s']:6.2f} s  makespan "
                  f"{r['makespan_s']} s  replans {r['replans']}  preemptions {r['preemptions']}"
                  + ("" if r["passed"] else f"  {r['error'] or '; '.join(r['failures'])}"),
                  flush=True)

    (work / transport).mkdir(parents=True, exist_ok=True)
    with bus(transport, work / transport) as url:
        async with anyio.create_task_group() as tg:
            for rep in range(args.repeat):
                for name in names:
                    tg.start_soon(one, name, rep, url)
    return rows


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.all:  # every shipped scenario (the suite runs most on one transport only)
        names = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))
    else:
        names = args.only.split(",") if args.only else list(DOMAINS)
    work = Path(tempfile.mkdtemp(prefix="robobus-bench-domains-"))
    rows: list[dict[str, Any]] = []
    for transport in args.transports.split(","):
        rows += await run_transport(transport, names, args, work)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--speed", type=float, default=SPEED)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated scenario stems")
    parser.add_argument("--all", action="store_true",
                        help="every scenario in scenarios/, not only the six domains")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    start = time.monotonic()
    rows = anyio.run(main_async, args)
    total = time.monotonic() - start
    passed = sum(r["passed"] for r in rows)
    print(f"{passed}/{len(rows)} passed in {total:.1f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"speed": args.speed, "jobs": args.jobs, "repeat": args.repeat, "total_s": round(total, 1),
           "runs": rows}
    (args.out / "domains.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    sys.exit(0 if passed == len(rows) else 1)


if __name__ == "__main__":
    main()
