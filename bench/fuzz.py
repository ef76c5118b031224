"""Fuzz benchmark: bad input at every agent topic while a scenario runs, for longer than the test.

    python -m bench.fuzz [--speed 1] [--rate 250] [--per-category 150] [--bus zmq|mqtt|both]

Same machinery as tests/fuzz (a seeded hypothesis corpus, an external client, the scenario
runner with every agent as a process); a lower ``--speed`` makes the scenario, and so the fuzz,
last longer. Prints, per bus: inputs per topic and per category, crashes, the rate held while
the scenario stayed correct, and the error reports by code. Writes ``fuzz.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import secrets
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import structlog

from bench.machine import load_file
from robobus import testing
from robobus.launch import fleet as fleet_mod

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "tests" / "fuzz"


def load(name: str) -> ModuleType:
    return load_file(FUZZ / f"{name}.py", f"robobus_fuzz_{name}")


async def one(args: argparse.Namespace, url: str, work: Path) -> dict[str, Any]:
    corpus_mod, driver = load("corpus"), load("driver")
    prefix = f"fz{secrets.token_hex(3)}"
    fleet = driver.fleet_of(args.scenario, prefix, corpus_mod)
    corpus = functools.partial(corpus_mod.build_corpus, fleet, args.per_category, args.seed)
    run = await driver.fuzz_scenario(args.scenario, url, prefix, corpus, report_dir=work / prefix,
                                     speed=args.speed, rate=args.rate, paced_rate=args.paced_rate,
                                     flood=args.flood)
    out = driver.summary(run, prefix)
    out["settings"] = {"speed": args.speed, "rate": args.rate, "paced_rate": args.paced_rate,
                       "per_category": args.per_category, "seed": args.seed,
                       "scenario": str(args.scenario)}
    return out


def show(name: str, s: dict[str, Any]) -> None:
    print(f"\n== {name}: {s['inputs']} inputs ({s['distinct_inputs']} distinct) in {s['fuzz_s']} s"
          f" = {s['msgs_per_s']} msg/s; scenario passed: {s['scenario_passed']}; "
          f"crashes: {len(s['crashed'])}")
    for title, key in (("topic", "per_topic"), ("category", "per_category"),
                       ("report code", "report_codes")):
        print(f"  {title:<24} count")
        for k, v in s[key].items():
            print(f"  {k:<24} {v}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="robobus-fuzz-") as tmp:
        work = Path(tmp)
        if args.bus in ("zmq", "both"):
            results["zmq"] = await one(args, fleet_mod.default_bus_url(), work)
            show("zmq", results["zmq"])
        if args.bus in ("mqtt", "both"):
            with contextlib.ExitStack() as stack:
                url = stack.enter_context(testing.mosquitto(directory=work))
                results["mqtt"] = await one(args, url, work)
            show("mqtt", results["mqtt"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", type=Path, default=REPO / "scenarios" / "fruit_and_knife.yaml")
    parser.add_argument("--speed", type=float, default=1.0, help="scenario speed (lower: longer)")
    parser.add_argument("--rate", type=float, default=250.0, help="inputs/s on most topics")
    parser.add_argument("--paced-rate", type=float, default=8.0,
                        help="inputs/s on instructions and world events (reports limited to 20/s)")
    parser.add_argument("--per-category", type=int, default=150)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--flood", type=int, default=300, help="flood size after the fuzz")
    parser.add_argument("--bus", choices=["zmq", "mqtt", "both"], default="both")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    results = anyio.run(main_async, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fuzz.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out / 'fuzz.json'}")
    if any(r["crashed"] or not r["scenario_passed"] for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
