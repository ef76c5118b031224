"""Edge agents as separate processes on MQTT, driven by ``mosquitto_pub`` like any client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import pytest

from robobus.edge_agent.harness import EdgeHarness
from robobus.schemas.messages import Alive, ErrorReport, RobotRegistration, RobotState, SkillFeedback
from robobus.testing import kill9, robobus_cmd, spawn

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def mosquitto_pub(url: str, topic: str, payload: bytes | str | dict[str, Any]) -> None:
    """Publish with the real ``mosquitto_pub`` (QoS 1); dicts go as JSON, bytes via stdin."""
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    u = urlsplit(url)
    await anyio.run_process(["mosquitto_pub", "-h", u.hostname or "127.0.0.1", "-p",
                             str(u.port), "-q", "1", "-t", topic, "-s"], input=data)


@contextlib.contextmanager
def edge(url: str, prefix: str, profile: str, name: str,
         *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    argv = robobus_cmd("edge", "--profile", profile, "--name", name, "--bus", url,
                       "--prefix", prefix, "--time-scale", "0.01", *extra)
    with spawn(argv, name=name, env={"ROBOBUS_LOG": "warning"}) as proc:
        yield proc


async def test_registration_and_liveness_kill9(mosquitto_url: str, prefix: str,
                                               scene: dict[str, Any]) -> None:
    async with EdgeHarness(scene, url=mosquitto_url, prefix=prefix) as h:
        t = h.topics
        async with h.bus.subscribe(t.alive("g1"), Alive) as alive, \
                h.bus.subscribe(t.state("g1"), RobotState) as states:
            with edge(mosquitto_url, prefix, "unitree_g1", "g1") as proc:
                with anyio.fail_after(15):
                    assert (await alive.get()).data.online
                await h.wait_robot("g1")
                async with h.bus.subscribe(t.registration("g1"), RobotRegistration) as regs:
                    reg = (await regs.get()).data
                assert reg.type == "unitree_g1" and len(reg.skills) == 5
                with anyio.fail_after(2):
                    first = (await states.get()).data
                    second = (await states.get()).data
                assert second.ts_ns > first.ts_ns and first.place == "kitchenTable"
                kill9(proc)
                t0 = anyio.current_time()
                with anyio.fail_after(3):
                    msg = await alive.get()
                assert msg.data.online is False and msg.data.robot == "g1"
                assert anyio.current_time() - t0 < 3.0


async def test_sigterm_is_graceful(mosquitto_url: str, prefix: str,
                                   scene: dict[str, Any]) -> None:
    async with EdgeHarness(scene, url=mosquitto_url, prefix=prefix) as h:
        async with h.bus.subscribe(h.topics.alive("rm"), Alive) as alive:
            with edge(mosquitto_url, prefix, "realman_single_arm", "rm") as proc:
                await h.wait_robot("rm")
                cid = "long-nav"
                await mosquitto_pub(mosquitto_url, h.topics.skill("rm", "navigate"),
                                    {"command_id": cid, "args": {"target": "officeDesk"},
                                     "timeout_s": 10_000})
                await h.wait(cid, {"started"})
                os.killpg(proc.pid, signal.SIGTERM)
                fb = await h.wait(cid)
                assert (fb.status, fb.reason_code) == ("cancelled", "shutdown")
                with anyio.fail_after(5):
                    async for msg in alive:
                        if not msg.data.online:
                            break
                assert await anyio.to_thread.run_sync(proc.wait, 5) == 0
        assert h.world.robots["rm"].place == "customTable"


async def test_commands_cancel_faults_and_bad_input(mosquitto_url: str, prefix: str,
                                                   scene: dict[str, Any]) -> None:
    pub = mosquitto_pub
    async with EdgeHarness(scene, url=mosquitto_url, prefix=prefix) as h:
        t = h.topics
        with edge(mosquitto_url, prefix, "unitree_g1", "g1"):
            await h.wait_robot("g1")
            # JSON and msgpack commands from a plain MQTT client.
            await pub(mosquitto_url, t.skill("g1", "pick"), {"command_id": "p1",
                                                            "args": {"object": "apple"}})
            assert (await h.wait("p1")).status == "done"
            assert h.statuses("p1")[:2] == ["accepted", "started"]
            packed = msgspec.msgpack.encode({"command_id": "n1", "skill": "navigate",
                                             "args": {"target": "customTable"}})
            await pub(mosquitto_url, t.skill("g1", "navigate"), packed)
            assert (await h.wait("n1")).status == "done"
            assert h.world.robots["g1"].place == "customTable" and h.world.holder("apple") == "g1"
            # Cancel a long navigation mid-way: the robot stays where it was.
            await pub(mosquitto_url, t.skill("g1", "navigate"),
                      {"command_id": "n2", "args": {"target": "officeDesk"},
                       "timeout_s": 10_000, "task_id": "t1"})
            await h.wait("n2", {"started"})
            await pub(mosquitto_url, t.skill("g1", "navigate"),
                      {"command_id": "n2", "action": "cancel"})
            assert (await h.wait("n2")).status == "cancelled"
            assert h.world.robots["g1"].place == "customTable"
            # Failure injection at run time: the next pick of knife fails, once.
            await pub(mosquitto_url, t.faults("g1"), {"skill": "pick", "object": "knife"})
            # No sleep: the broker keeps this client's order and the agent reads it in order.
            await pub(mosquitto_url, t.skill("g1", "pick"), {"command_id": "k1",
                                                            "args": {"object": "knife"}})
            assert (await h.wait("k1")).reason_code == "injected"
            assert h.world.holder("knife") is None
            # Bad commands: each rejected precisely, each on P/errors, the agent keeps going.
            async with h.bus.subscribe(t.errors, ErrorReport) as errors:
                await pub(mosquitto_url, t.skill("g1", "pick"), b"\x93not a map")
                await pub(mosquitto_url, t.skill("g1", "fly"), {"command_id": "f1"})
                await pub(mosquitto_url, t.skill("g1", "pick"), {"command_id": "b1",
                                                                "args": {"obj": "knife"}})
                await pub(mosquitto_url, t.skill("g1", "pick"), {"command_id": "o1",
                                                                "robot": "agilex",
                                                                "args": {"object": "knife"}})
                with anyio.fail_after(5):
                    codes = sorted([(await errors.get()).data.code for _ in range(4)])
            assert codes == ["bad_args", "decode", "unknown_skill", "wrong_robot"]
            assert (await h.wait("f1")).status == "rejected"
            assert "obj" in ((await h.wait("b1")).reason or "")
            await pub(mosquitto_url, t.skill("g1", "pick"), {"command_id": "k2",
                                                            "args": {"object": "knife"}})
            assert (await h.wait("k2")).status == "done"


async def test_two_robot_processes_contend_for_one_apple(mosquitto_url: str, prefix: str,
                                                        scene: dict[str, Any]) -> None:
    async with EdgeHarness(scene, url=mosquitto_url, prefix=prefix) as h:
        with edge(mosquitto_url, prefix, "unitree_g1", "g1"), \
                edge(mosquitto_url, prefix, "realman_single_arm", "rm", "--at", "kitchenTable"):
            await h.wait_robot("g1")
            await h.wait_robot("rm")
            async with anyio.create_task_group() as tg:
                for robot in ("g1", "rm"):
                    tg.start_soon(mosquitto_pub, mosquitto_url, h.topics.skill(robot, "pick"),
                                  {"command_id": f"grab-{robot}", "args": {"object": "apple"}})
            results = [await h.wait(f"grab-{r}") for r in ("g1", "rm")]
        assert sorted(fb.status for fb in results) == ["done", "failed"]
        winner = next(fb.robot for fb in results if fb.status == "done")
        loser = next(fb for fb in results if fb.status == "failed")
        assert loser.reason_code in ("already_held", "precondition")
        assert h.world.holder("apple") == winner
        assert h.world.robots[loser.robot].holding == []


# -- single hostile commands (issue 13) ------------------------------------------------------
async def _report(errors: Any, code: str) -> ErrorReport:
    with anyio.fail_after(10):
        while True:
            report: ErrorReport = (await errors.get()).data
            if report.code == code:
                return report


async def test_non_finite_timeouts_are_refused(mosquitto_url: str, prefix: str,
                                               scene: dict[str, Any]) -> None:
    async with EdgeHarness(scene, url=mosquitto_url, prefix=prefix) as h:
        topic = h.topics.skill("g1", "navigate")
        with edge(mosquitto_url, prefix, "unitree_g1", "g1") as proc:
            await h.wait_robot("g1")
            async with h.bus.subscribe(h.topics.errors, ErrorReport) as errors:
                # JSON as a person writes it (Python's json reads NaN and Infinity) and msgpack.
                for cid, value in (("nan", "NaN"), ("inf", "Infinity"), ("neg", "-1")):
                    await mosquitto_pub(mosquitto_url, topic, f'{{"command_id": "{cid}", '
                                        f'"args": {{"target": "officeDesk"}}, "timeout_s": {value}}}')
                    fb = await h.wait(cid, {"rejected"})
                    assert fb.reason_code == "decode" and "timeout_s" in (fb.reason or "")
                    assert "timeout_s" in (await _report(errors, "decode")).reason
                packed = msgspec.msgpack.encode({"command_id": "mp", "timeout_s": float("nan"),
                                                 "args": {"target": "officeDesk"}})
                await mosquitto_pub(mosquitto_url, topic, packed)
                assert (await h.wait("mp", {"rejected"})).reason_code == "decode"
            assert proc.poll() is None
            await mosquitto_pub(mosquitto_url, topic, {"command_id": "ok", "timeout_s": 30,
                                                       "args": {"target": "officeDesk"}})
            assert (await h.wait("ok")).status == "done"
        async with h.bus.subscribe(h.topics.alive("g1"), Alive) as alive:
            with edge(mosquitto_url, prefix, "unitree_g1", "g1"):  # its own restart
                with anyio.fail_after(15):
                    while not (await alive.get()).data.online:  # the stop left it offline
                        pass
                await mosquitto_pub(mosquitto_url, topic, {"command_id": "ok2",
                                                           "args": {"target": "kitchenTable"}})
                assert (await h.wait("ok2")).status == "done"


async def test_a_huge_object_name_fails_the_pick_with_a_bounded_report(
        mosquitto_url: str, prefix: str, scene: dict[str, Any]) -> None:
    async with EdgeHarness(scene, url=mosquitto_url, prefix=prefix) as h:
        topic = h.topics.skill("g1", "pick")
        with edge(mosquitto_url, prefix, "unitree_g1", "g1") as proc:
            await h.wait_robot("g1")
            async with h.bus.subscribe(h.topics.feedback("g1"), SkillFeedback) as feedback:
                await mosquitto_pub(mosquitto_url, topic, {"command_id": "huge",
                                                           "args": {"object": "x" * 900_000}})
                fb = await h.wait("huge")
                assert fb.status == "failed" and len(fb.reason or "") <= 2000
                assert "characters cut" in (fb.reason or "")
                with anyio.fail_after(5):
                    async for msg in feedback:
                        if msg.data.command_id == "huge" and msg.data.status == "failed":
                            assert len(msg.payload) < 10_000
                            break
            assert proc.poll() is None
            await mosquitto_pub(mosquitto_url, topic, {"command_id": "apple",
                                                       "args": {"object": "apple"}})
            assert (await h.wait("apple")).status == "done"
            assert h.world.holder("apple") == "g1"
