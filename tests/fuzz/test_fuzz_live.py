"""The contract fuzz against live processes (issue 13 item 6).

* The mutations of tests/fuzz/contract.py go to a running fleet (hub, memory, brain, three
  edges: processes), with the corpus oracle's checks (tests/fuzz/driver.py): no process dies,
  every refused input is reported on ``P/errors``, nothing stored before is lost, every accepted
  input is recorded, the scenario passes, and a fresh valid instruction completes afterwards.
* The hub's control socket gets hypothesis-drawn frames from a raw ZeroMQ client; the hub lives.

Bounded for CI; ``ROBOBUS_FUZZ_SCALE=20`` multiplies every budget for a long run.
"""

from __future__ import annotations

import functools
import secrets
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import msgspec
import pytest
import zmq
from hypothesis import strategies as st

from bench.machine import load_file
from robobus import testing
from robobus.bus import Bus, DecodeError
from robobus.launch import fleet as fleet_mod
from robobus.schemas.codec import decode_as
from robobus.schemas.contract import TOPIC_TYPES

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parents[1] / "scenarios" / "fruit_and_knife.yaml"


def load(name: str) -> ModuleType:
    return load_file(HERE / f"{name}.py", f"robobus_fuzz_{name}")


contract, corpus_mod, driver = load("contract"), load("corpus"), load("driver")
SCALE, REGRESSIONS = contract.SCALE, contract.REGRESSIONS


UNSERVED = {("groups", "+", "instructions"), ("groups", "+", "instructions", "+")}


def build_live_corpus(fleet: Any, per_topic: int, seed: int) -> list[Any]:
    """Mutations for every contract topic plus the regressions, judged by the corpus oracle;
    topics no agent acts on are ``accept`` (recorded) unless well-formed (forgery: not sent)."""
    judge = corpus_mod.Judge(fleet)
    out: list[Any] = []
    robots = sorted(fleet.robots)
    for i, (pattern, type_) in enumerate(sorted(TOPIC_TYPES.items())):
        if pattern in UNSERVED:
            continue
        draws = corpus_mod.draw_examples(st.sampled_from(robots).flatmap(
            lambda r, p=pattern, t=type_: st.tuples(contract.mutated(t, _base(p, r, fleet)),
                                                    st.just(r))), per_topic, seed + i)
        for (payload, how), robot in draws:
            _add(out, judge, fleet, pattern, type_, payload, how, robot)
        for p, payload, what in REGRESSIONS:
            if p == pattern:
                _add(out, judge, fleet, pattern, type_, payload, what, robots[0])
    return out


def _base(pattern: tuple[str, ...], robot: str, fleet: Any) -> dict[str, Any]:
    """Fields that make the valid base fit its topic (mutations then break it)."""
    if pattern[0] == "robots":
        return {"robot": robot, "skill": fleet.robots[robot][0]}
    return {"task_id": "fz1"} if pattern[0] == "tasks" else {}


def _add(out: list[Any], judge: Any, fleet: Any, pattern: tuple[str, ...], type_: type,
         payload: bytes, how: str, robot: str) -> None:
    topic = fill(pattern, fleet.prefix, robot, fleet.robots[robot][0])
    item = _judge(judge, corpus_mod.FuzzInput(f"contract:{how.split(':')[0]}", topic, payload),
                  pattern, type_)
    if item.verdict != "unsafe":
        out.append(item)


def fill(pattern: tuple[str, ...], prefix: str, robot: str, skill: str) -> str:
    """A topic for ``pattern``: a robot's level is ``robot``, a skill's ``skill``, else fz."""
    levels = [p if p != "+" else (robot if n == 1 else skill) if pattern[0] == "robots"
              else f"fz{n}" for n, p in enumerate(pattern)]
    return "/".join([prefix, *levels])


_JUDGED = {"robots", "instructions", "tasks", "memory", "world"}


def _judge(judge: Any, item: Any, pattern: tuple[str, ...], type_: type) -> Any:
    if pattern[0] in _JUDGED and pattern != ("memory", "status"):
        try:
            return judge(item)
        except (msgspec.MsgspecError, RecursionError) as exc:  # the oracle's own decode
            item.verdict, item.reason = "reject", f"decode: {exc}"
            return item
    if len(item.payload) > contract.MAX_PAYLOAD:  # refused, but no report about a report
        verdict = "dropped" if pattern == ("errors",) else "reject"
        item.verdict, item.reason = verdict, "too_large"
        return item
    try:
        decode_as(item.payload, type_, item.topic)
        item.verdict, item.reason = "unsafe", "a well-formed presence or report (forgery)"
    except DecodeError:
        item.verdict, item.reason = "accept", "no agent acts on it: recorded only"
    return item


@pytest.mark.slow
@pytest.mark.anyio
async def test_live_fleet_survives_contract_fuzz(tmp_path: Path) -> None:
    await _live(fleet_mod.default_bus_url(), tmp_path)


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.anyio
@pytest.mark.skipif(SCALE == 1, reason="long run only (ROBOBUS_FUZZ_SCALE > 1): CI time")
async def test_live_fleet_survives_contract_fuzz_mqtt(mosquitto_url: str, tmp_path: Path) -> None:
    await _live(mosquitto_url, tmp_path)


async def _live(url: str, tmp_path: Path) -> None:
    prefix = f"cf{secrets.token_hex(3)}"
    fleet = driver.fleet_of(SCENARIO, prefix, corpus_mod)
    build = functools.partial(build_live_corpus, fleet, 12 * SCALE, 20261207)
    run = await driver.fuzz_scenario(SCENARIO, url, prefix, build,
                                     report_dir=tmp_path / "run", speed=3.0, rate=250.0,
                                     paced_rate=8.0, flood=0, fresh=True)
    summary = driver.summary(run, prefix)
    print("CONTRACT_FUZZ", {k: summary[k] for k in ("inputs", "per_topic", "verdicts",
                                                     "unreported_rejects", "crashed")})
    checks = load("test_fuzz_agents")
    result = run.result
    assert result.passed, result.error or [f.reason for f in result.failures()]
    assert not run.hooks.crashed, run.hooks.crashed
    assert {"memory", "brain"} <= set(run.hooks.alive_at_end), run.hooks.alive_at_end
    sent = {driver.topic_kind(fleet.topics, i.topic) for i in run.sent}
    assert len(sent) >= len(TOPIC_TYPES) - len(UNSERVED) - 1, sent  # (the scenario may end)
    must = Counter(i.topic for i in run.sent if i.verdict == "reject")
    got = run.reports_by_topic()
    short = {t: (n, got[t]) for t, n in must.items() if got[t] < n}
    for t in short:
        print("SHORT", t, Counter(i.reason[:40] for i in run.sent if i.topic == t
                                  and i.verdict == "reject"),
              Counter(r.code for r in run.reports if r.topic == t))
    assert not short, f"refused inputs without a report (topic: sent, reported): {short}"
    checks._check_store(run, result.report_dir / "store", f"{prefix}/memory/query")
    assert run.fresh_done, f"a fresh valid instruction did not complete: {run.fresh_statuses}"


# -- the hub's control socket -------------------------------------------------------------------
COMMANDS = [b"HELLO", b"HB", b"BYE", b"PUB", b"SNAP", b"DURABLE", b"DACK", b"WHO", b"ACK",
            b"DATA", b"NODURABLE", b"DENY", b"", b"\xff" * 3]


def _frames() -> st.SearchStrategy[list[bytes]]:
    hello = st.builds(lambda k, w: msgspec.msgpack.encode({"keepalive": k, "will": w}),
                      st.one_of(st.floats(allow_nan=True), st.text(max_size=4), st.none(),
                                st.integers(-(2**63), 2**63 - 1)),
                      st.one_of(st.none(), st.dictionaries(st.text(max_size=5),
                                                           st.text(max_size=5), max_size=2)))
    arg = st.one_of(st.binary(max_size=40), hello, st.just(b"\x91" * 5000 + b"\x01"),
                    st.just("\ud800".encode("utf-8", "surrogatepass")),
                    st.integers(0, 2**70).map(lambda n: n.to_bytes(9, "big")))
    return st.tuples(st.sampled_from(COMMANDS), st.lists(arg, max_size=5)).map(
        lambda t: [t[0], *t[1]])


@pytest.mark.anyio
async def test_hub_control_socket_survives_drawn_frames() -> None:
    frames = corpus_mod.draw_examples(_frames(), 300 * SCALE, 20261207)
    with testing.hub() as url:
        port = int(url.rsplit(":", 1)[1])
        ctx = zmq.Context()
        ctl = ctx.socket(zmq.DEALER)
        ctl.connect(f"tcp://{testing.LOOPBACK}:{port + 2}")
        try:
            async with Bus.connect(url, name="witness") as bus, bus.subscribe("w/#") as sub:
                for parts in frames:
                    ctl.send_multipart(parts)
                    await anyio.lowlevel.checkpoint()
                with anyio.fail_after(20):  # acked: the hub's control loop still works
                    await bus.publish("w/1", b"after the frames", qos=1)
                    assert (await sub.get()).payload == b"after the frames"
        finally:
            ctl.close(0)
            ctx.term()
    print("CONTROL_FUZZ frames", len(frames))
