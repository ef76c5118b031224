"""Authorization (issue 13): one policy from ``secure init``, enforced by Mosquitto's ACL and by
the ZeroMQ hub per CURVE key. Every cross-identity action of the issue is refused with the
accounts ``secure init`` makes; legit traffic goes on."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from bench import scenes
from robobus import testing
from robobus.bus import Bus, BusError, BusOptions, ConnectError, PublishError, Subscription, Will
from robobus.bus import policy as policies
from robobus.bus.policy import covers
from robobus.schemas.messages import ErrorReport
from robobus.schemas.topics import Topics
from robobus.secure import SecureConfig, secure_init
from tests.brain.test_processes import Fleet

pytestmark = pytest.mark.anyio
P = "robobus"


@pytest.fixture(scope="module")
def secure_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("authz")
    secure_init(SecureConfig(directory, robots=["r1", "r2"], port=testing.free_port()))
    return directory


@pytest.fixture(scope="module")
def secure_hub(secure_dir: Path) -> Iterator[str]:
    extra = ["--curve-keys", str(secure_dir / "zmq"), "--replay-buffer", "10000"]
    with testing.hub(extra=extra) as url:
        yield url


@contextlib.asynccontextmanager
async def as_key(monkeypatch: pytest.MonkeyPatch, secure_dir: Path, url: str, account: str,
                 will: Will | None = None) -> AsyncIterator[Bus]:
    """A client holding ``account``'s CURVE key (named differently, to show names are not
    what counts)."""
    monkeypatch.setenv("ROBOBUS_ZMQ_KEYS", str(secure_dir / "zmq"))
    monkeypatch.setenv("ROBOBUS_ZMQ_CLIENT", account)
    async with Bus.connect(url, name=f"{account}-x", options=BusOptions(will=will)) as bus:
        yield bus


def test_one_policy_makes_the_acl(secure_dir: Path) -> None:
    policy = policies.load(secure_dir / "policy.json")
    assert (secure_dir / "acl").read_text() == policies.mosquitto_acl(policy)
    assert policy.may_publish("r1", f"{P}/robots/r1/state")
    assert not policy.may_publish("r1", f"{P}/robots/r2/alive")
    assert not policy.may_publish("r1", f"{P}/instructions")
    assert not policy.may_publish("r1", f"{P}/instructions/r1")
    # an operator instructs on its own topic only: the level is its identity (issue 13)
    assert policy.may_publish("operator", f"{P}/instructions/operator")
    assert not policy.may_publish("operator", f"{P}/instructions")
    assert not policy.may_publish("operator", f"{P}/instructions/brain")
    assert "topic write robobus/instructions/operator" in policies.mosquitto_acl(policy)
    op, keys = {"ROBOBUS_MQTT_USERNAME": "operator"}, {"ROBOBUS_ZMQ_KEYS": "d", "ROBOBUS_ZMQ_CLIENT": "r1"}
    assert policies.own_instructions(f"{P}/instructions", "mqtts://h", op) == f"{P}/instructions/operator"
    assert policies.own_instructions(f"{P}/instructions", "zmq://h", keys) == f"{P}/instructions/r1"
    assert policies.own_instructions(f"{P}/instructions", "mqtt://h", {}) == f"{P}/instructions"
    assert policies.own_instructions(f"{P}/errors", "mqtts://h", op) == f"{P}/errors"
    assert covers(f"{P}/robots/r1/#", f"{P}/robots/r1/skills/")
    assert not covers(f"{P}/robots/r1/#", f"{P}/robots/")
    assert not covers(f"{P}/robots/r1/#", f"{P}/robots/r1")  # would also pass robots/r10
    assert covers(f"{P}/#", "") is False and covers("#", "")


async def _drain(sub: object) -> list[bytes]:
    got = []
    while (msg := sub.get_nowait()) is not None:  # type: ignore[attr-defined]
        got.append(msg.payload)
    return got


async def test_zmq_key_cannot_act_for_another_identity(
        secure_dir: Path, secure_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = functools.partial(as_key, monkeypatch, secure_dir, secure_hub)
    async with key("memory") as watcher, watcher.subscribe(f"{P}/robots/#") as seen, \
            watcher.subscribe(f"{P}/instructions") as instructions, \
            watcher.subscribe(f"{P}/errors", ErrorReport) as errors, \
            key("r2") as r2, r2.subscribe(f"{P}/robots/r2/skills/#") as r2_cmds:
        await r2.publish(f"{P}/robots/r2/registration", b"reg-r2", retain=True, qos=1)
        async with key("r1") as r1:
            # commanding r2, instructing, setting r2 offline: acknowledged ones are refused...
            for topic in (f"{P}/robots/r2/skills/pick", f"{P}/instructions", f"{P}/robots/r2/alive"):
                with pytest.raises(PublishError, match="not authorized"):
                    await r1.publish(topic, b"evil", qos=1, retain=topic.endswith("alive"))
            # ... and best-effort ones dropped by the hub
            await r1.publish(f"{P}/robots/r2/skills/pick", b"evil-qos0")
            await r1.publish(f"{P}/instructions", b"evil-qos0")
            # reading: a wildcard over every robot is refused, retained values included
            async with r1.subscribe(f"{P}/robots/+/registration") as spy_reg, \
                    r1.subscribe(f"{P}/robots/+/skills/#") as spy, \
                    r1.subscribe(f"{P}/robots/r1/skills/#") as own, key("brain") as brain:
                await brain.publish(f"{P}/robots/r2/skills/pick", b"for r2", qos=1)
                await brain.publish(f"{P}/robots/r1/skills/pick", b"for r1", qos=1)
                with anyio.fail_after(5):
                    first = await r2_cmds.get()
                    assert (await own.get()).payload == b"for r1"
                assert (first.payload, first.sender) == (b"for r2", "brain"), "sender is the key's"
                assert await _drain(spy) == [b"for r1"] and await _drain(spy_reg) == []
            await r1.publish(f"{P}/robots/r1/state", b"own state", qos=1)
        # a last will on another robot's alive: the hello is refused, no will is kept
        with pytest.raises(ConnectError, match="last will"):
            async with key("r1", will=Will(f"{P}/robots/r2/alive", b"offline")):
                pass
        # one report per refusal (3 acknowledged, 2 best-effort, 1 subscription, 1 will)
        with anyio.fail_after(10):
            reports = [(await errors.get()).data for _ in range(7)]
        assert await _drain(r2_cmds) == [] and await _drain(errors) == []
    assert {r.sender for r in reports} == {"r1"} and {r.source for r in reports} == {"hub"}
    said = " ".join(r.reason for r in reports)
    for what in ("publish on 'robobus/robots/r2/skills/pick'", "publish on 'robobus/instructions'",
                 "publish on 'robobus/robots/r2/alive'", "subscribe to 'robobus/robots/'",
                 "leave a last will on 'robobus/robots/r2/alive'"):
        assert what in said, (what, said)
    assert all(b"evil" not in p for p in await _drain(seen) + await _drain(instructions))


async def test_zmq_durable_stream_belongs_to_its_account(
        secure_dir: Path, secure_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: ``DURABLE memory`` from another key moved the memory agent's stream to it."""
    key = functools.partial(as_key, monkeypatch, secure_dir)
    durable = f"{secure_hub}?durable=memory"
    async with key(secure_hub, "memory") as watcher, \
            watcher.subscribe(f"{P}/errors", ErrorReport) as errors, \
            key(durable, "memory") as memory, memory.subscribe(f"{P}/robots/r1/#") as kept:
        async with key(durable, "operator") as op, op.subscribe(f"{P}/robots/r1/#") as taken, \
                key(durable, "r1") as r1d, r1d.subscribe(f"{P}/robots/r1/#") as taken_by_robot:
            with anyio.fail_after(10):
                reports = [(await errors.get()).data for _ in range(2)]
            async with key(secure_hub, "r1") as r1:
                for i in range(20):
                    await r1.publish(f"{P}/robots/r1/state", str(i).encode(), qos=1)
            got: list[bytes] = []
            with anyio.fail_after(10):  # the stream starts with what the buffer held before
                while len(got) < 20:
                    if (payload := (await kept.get()).payload).isdigit():
                        got.append(payload)
            assert got == [str(i).encode() for i in range(20)]
            assert await _drain(taken) == [] and await _drain(taken_by_robot) == []
    assert {r.sender for r in reports} == {"operator", "r1"}
    assert any("take over the durable stream of account 'memory'" in r.reason for r in reports)


async def test_a_flood_of_refusals_is_counted_not_hidden() -> None:
    """Issue 13: the error-report limiter hid 1,897 of 1,948 refusals. Reports past the limit
    are now counted: the next report, or a summary a second later, says how many were not
    sent, so the reports account for every refused input."""
    url = f"memory://{secrets.token_hex(4)}"
    async with Bus.connect(url, name="agent") as agent, \
            agent.subscribe("robobus/in", ErrorReport, reports=True) as inbound, \
            Bus.connect(url, name="flooder") as flooder, \
            flooder.subscribe("robobus/errors", ErrorReport) as errors, \
            anyio.create_task_group() as tg:
        tg.start_soon(_consume, inbound)  # decoding (and refusing) happens as the agent reads
        for _ in range(300):
            await flooder.publish("robobus/in", b"\xc1 not msgpack")
        told = 0
        with anyio.fail_after(10):
            while told < 300:
                report = (await errors.get()).data
                counted = re.search(r"(\d+) (earlier )?reports on this topic suppressed",
                                    report.reason)
                told += (report.code != "suppressed") + (int(counted[1]) if counted else 0)
        assert told == 300
        tg.cancel_scope.cancel()


async def _consume(sub: Subscription) -> None:
    async for _ in sub:
        pass



class SecureFleet(Fleet):
    """The demo fleet, each agent process holding its own ``secure init`` account."""

    def __init__(self, secure_dir: Path, *args: Any) -> None:
        super().__init__(*args)
        self.secure_dir = secure_dir
        self.prefix, self.topics = P, Topics(P)

    def spawn(self, name: str, *args: str) -> None:
        argv = testing.robobus_cmd(*args, "--bus", self.url, "--prefix", self.prefix)
        self.procs[name] = self.stack.enter_context(testing.spawn(
            argv, name=name, env=testing.account_env(self.secure_dir, name), log_dir=self.tmp / "logs"))


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("authz-fleet")
    robots = [r["name"] for r in scenes.DEMO_ROBOTS]
    secure_init(SecureConfig(directory, robots=robots, port=testing.free_port()))
    return directory


@contextlib.contextmanager
def _secure_bus(kind: str, secure_dir: Path) -> Iterator[str]:
    if kind == "zmq":
        with testing.hub(extra=["--curve-keys", str(secure_dir / "zmq")]) as url:
            yield url
        return
    with testing.secured_mosquitto(secure_dir) as url:
        yield url


@pytest.mark.parametrize("kind", ["zmq", pytest.param("mqtt", marks=pytest.mark.broker)])
async def test_a_secured_fleet_still_completes_an_instruction(
        kind: str, fleet_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Legit traffic under the policy: brain, memory and three edges, each with its own
    account, carry out an instruction an operator sends."""
    for key, value in testing.account_env(fleet_dir, "operator").items():
        monkeypatch.setenv(key, value)
    with _secure_bus(kind, fleet_dir) as url, contextlib.ExitStack() as stack:
        fl = SecureFleet(fleet_dir, tmp_path, url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS, stack)
        fl.start_memory()
        for spec in scenes.DEMO_ROBOTS:
            fl.start_edge(spec)
        fl.start_brain()
        async with Bus.connect(url, name="operator", options=BusOptions(prefix=P)) as bus, \
                anyio.create_task_group() as tg:
            await tg.start(fl.watch, bus)
            await fl.registered(bus)
            await fl.world(bus)  # request/reply through the operator's inbox (MQTT: times out)
            tid = await fl.send(bus, "bring the apple to the office desk")
            st = await fl.until(lambda: fl.status(tid), timeout=40)
            assert st.status == "done", st.reason
            world = await fl.world(bus)
            assert world.place_of("apple") == "officeDesk"
            tg.cancel_scope.cancel()


async def test_mqtt_account_cannot_set_another_robot_offline(
        secure_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same policy on Mosquitto (commanding another robot, reading its commands and
    instructing are in test_secure.py): r1's account cannot publish r2's presence."""
    def account(name: str) -> None:
        for key, value in testing.account_env(secure_dir, name).items():
            monkeypatch.setenv(key, value)

    alive = f"{P}/robots/r2/alive"
    with _secure_bus("mqtt", secure_dir) as url:
        account("memory")
        async with Bus.connect(url, name="memory") as watcher, watcher.subscribe(alive) as seen:
            account("r1")
            async with Bus.connect(url, name="r2") as r1:  # a name is not an identity
                with pytest.raises(BusError):
                    await r1.publish(alive, b"offline", retain=True, qos=1)
            account("r2")
            async with Bus.connect(url, name="r2") as r2:
                await r2.publish(alive, b"online", retain=True, qos=1)
            with anyio.fail_after(5):
                assert (await seen.get()).payload == b"online"
            assert seen.get_nowait() is None


async def test_zmq_clients_rejoin_a_restarted_hub_under_the_policy(
        secure_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted hub knows no client id: subscriptions come back with the reconnect before
    any hello, commands before a hello are answered WHO, and a robot's traffic resumes."""
    port = testing.free_port(span=3)
    extra = ["--curve-keys", str(secure_dir / "zmq")]
    key = functools.partial(as_key, monkeypatch, secure_dir)
    with contextlib.ExitStack() as first:
        url = first.enter_context(testing.hub(port=port, extra=extra))
        async with key(url, "memory") as memory, memory.subscribe(f"{P}/robots/r1/#") as seen, \
                key(url, "r1") as r1:
            await r1.publish(f"{P}/robots/r1/state", b"before", qos=1)
            with anyio.fail_after(5):
                assert (await seen.get()).payload == b"before"
            first.close()
            with testing.hub(port=port, extra=extra):
                await r1.publish(f"{P}/robots/r1/state", b"after", qos=1)
                with anyio.fail_after(10):
                    assert (await seen.get()).payload == b"after"
                with pytest.raises(PublishError):
                    await r1.publish(f"{P}/instructions", b"still refused", qos=1)


_DIE_WITH_WILLS = """
import os, sys, anyio
from robobus.bus import Bus, BusOptions, Will
async def main(url):
    async with Bus.connect(url, name="r1", options=BusOptions(will=Will(
            "robobus/robots/r1/alive", b"r1 will"))), \\
            Bus.connect(url, name="r1b", options=BusOptions(will=Will(
            "robobus/robots/r2/alive", b"r2 offline, says r1"))):
        os._exit(0)  # no goodbye: the broker publishes the wills it allows
anyio.run(main, sys.argv[1])
"""


async def test_mqtt_will_on_another_robots_alive_is_dropped(
        secure_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting another robot offline through a last will: Mosquitto checks the will's topic
    against the ACL when it publishes it (r1's own will arrives, the one on r2's alive not)."""
    with _secure_bus("mqtt", secure_dir) as url:
        for key, value in testing.account_env(secure_dir, "memory").items():
            monkeypatch.setenv(key, value)
        async with Bus.connect(url, name="memory") as watcher, \
                watcher.subscribe(f"{P}/robots/+/alive") as seen:
            r1 = {**os.environ, **testing.account_env(secure_dir, "r1")}
            proc = await anyio.run_process([sys.executable, "-c", _DIE_WITH_WILLS, url], env=r1,
                                           check=False)
            assert proc.returncode == 0, proc.stderr
            with anyio.fail_after(10):
                assert (await seen.get()).payload == b"r1 will"
            for key, value in testing.account_env(secure_dir, "r2").items():
                monkeypatch.setenv(key, value)
            async with Bus.connect(url, name="r2") as r2:
                await r2.publish(f"{P}/robots/r2/alive", b"r2 online", qos=1)
            with anyio.fail_after(5):
                assert (await seen.get()).payload == b"r2 online"
            assert seen.get_nowait() is None


async def test_zmq_a_flood_of_refused_publishes_is_counted(
        secure_dir: Path, secure_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub reports at most 5 refusals a second per account (bursts of 20), and says how
    many it did not report one by one: the reports account for every refused publish."""
    key = functools.partial(as_key, monkeypatch, secure_dir, secure_hub)
    async with key("memory") as watcher, watcher.subscribe(f"{P}/errors", ErrorReport) as errors, \
            watcher.subscribe(f"{P}/instructions") as instructions:
        async with key("r2") as r2:
            for i in range(200):
                await r2.publish(f"{P}/instructions", f"flood {i}".encode())
            told = 0
            with anyio.fail_after(10):
                while told < 200:
                    report = (await errors.get()).data
                    assert report.sender == "r2", report
                    untold = re.search(r"(\d+) (earlier|more) refusals", report.reason)
                    told += (report.code == "forbidden") + (int(untold[1]) if untold else 0)
            assert told == 200
        assert instructions.get_nowait() is None
