"""A supervised fleet (issue 12, item 5): ``robobus up`` as a user runs it, faults as users make them.

Every process is real: ``up`` starts the hub or a private Mosquitto, memory, brain and edges.
Process death is checked by pid (``/proc``), ports by binding them; no fixed sleeps: each wait
is for a line ``up`` prints, a bus message, or a process/port state polled until a deadline.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from robobus import testing
from robobus.bus import Bus, BusError, BusOptions
from robobus.launch.fleet import brain_ready
from robobus.schemas.messages import Alive, Instruction, TaskStatus

REPO = Path(__file__).resolve().parents[2]
ROBOTS = ("realman_1", "g1", "agilex")  # the demo fleet, which ``up`` starts by default


def _env(prefix: str) -> dict[str, str]:
    return {**os.environ, "ROBOBUS_PREFIX": prefix, "ROBOBUS_LOG": "warning"}


def fleet_pids(prefix: str) -> dict[int, list[str]]:
    """Live (not zombie) processes started for ``prefix``, other than this one: pid -> argv."""
    needle = f"ROBOBUS_PREFIX={prefix}".encode()
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and \
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                found[int(entry.name)] = argv
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` (a process or port state has no event to wait on); return the seconds."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what} not within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def edge_pid(prefix: str, robot: str) -> int:
    return next(pid for pid, argv in fleet_pids(prefix).items()
                if "edge" in argv and argv[argv.index("--name") + 1] == robot)


@pytest.fixture
def prefix() -> Iterator[str]:
    value = f"sup{secrets.token_hex(3)}"
    yield value
    left = fleet_pids(value)
    for pid in left:  # never leave a fleet behind, even when the test failed
        with_suppressed_kill(pid)
    assert left == {}, f"processes left behind: {left}"


def with_suppressed_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Up:
    """``robobus up`` as a subprocess, in its own session (as a terminal would start it)."""

    def __init__(self, tmp: Path, prefix: str, url: str, *extra: str) -> None:
        name = f"up-{secrets.token_hex(2)}"
        self.out = tmp / f"{name}.out"
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                testing.robobus_cmd("up", "--bus", url, "--speed", "20", "--report", str(tmp / name),
                                    *extra),
                stdout=out, stderr=subprocess.STDOUT, env=_env(prefix), cwd=REPO,
                start_new_session=True)

    def text(self) -> str:
        return self.out.read_text()

    def wait_up(self, timeout: float = 60) -> None:
        wait_until(lambda: "fleet up on" in self.text() or self.proc.poll() is not None,
                   timeout, "fleet up")
        assert self.proc.poll() is None, self.text()

    def stop(self) -> None:
        testing.stop(self.proc)  # type: ignore[arg-type]


def _ports_free(*ports: int) -> bool:
    """A new server can listen on every port (as hub and Mosquitto do, with SO_REUSEADDR:
    connections the dead server closed may linger in TIME_WAIT)."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((testing.LOOPBACK, port))
                s.listen()
            except OSError:
                return False
    return True


async def _online_again(url: str, prefix: str, robot: str, since_ns: int, timeout: float) -> float:
    t0 = anyio.current_time()
    async with Bus.connect(url, name="tester", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(f"{prefix}/robots/{robot}/alive", Alive) as sub:
        with anyio.fail_after(timeout):
            async for msg in sub:
                if msg.data.online and msg.data.ts_ns > since_ns:
                    return anyio.current_time() - t0
    raise AssertionError("subscription ended")


async def _brain_ready_again(url: str, prefix: str, since_ns: int, timeout: float) -> float:
    t0 = anyio.current_time()
    async with Bus.connect(url, name="tester", options=BusOptions(prefix=prefix)) as bus:
        with anyio.fail_after(timeout):
            await brain_ready(bus, since_ns)
    return anyio.current_time() - t0


async def _fresh_task_done(url: str, prefix: str, timeout: float) -> float:
    """Send a new instruction until the brain takes it (the bus may still be coming back), then
    wait for its final status; the seconds it took. A fleet that recovered completes it."""
    t0 = anyio.current_time()
    tid = f"fresh{secrets.token_hex(3)}"
    inst = Instruction("bring the apple to the office desk", task_id=tid)
    with anyio.fail_after(timeout):
        while True:  # the client itself may find no bus yet: retry the connection as well
            try:
                async with Bus.connect(url, name="tester", options=BusOptions(prefix=prefix)) \
                        as bus, bus.subscribe(f"{prefix}/tasks/{tid}", TaskStatus) as sub:
                    status = None
                    while status is None or status.status not in ("done", "failed", "cancelled"):
                        if status is None:
                            await bus.publish(f"{prefix}/instructions", inst, qos=1)
                        with anyio.move_on_after(1.0 if status is None else timeout):
                            status = (await sub.get()).data
                    assert status.status == "done", status
                    return anyio.current_time() - t0
            except BusError:
                await anyio.sleep(0.2)  # no bus yet: a refused connection has no event


def _restarted(prefix: str, name: str, old: int, port: int, timeout: float) -> float:
    """Seconds until ``up`` has a new ``name`` process (not ``old``) listening on ``port``."""
    def back() -> bool:
        pids = [p for p, argv in fleet_pids(prefix).items() if any(name in a for a in argv[:5])]
        return bool(pids) and old not in pids and not _ports_free(port)
    return wait_until(back, timeout, f"{name} restarted")


def _infra_pid(prefix: str, name: str) -> int:
    return next(pid for pid, argv in fleet_pids(prefix).items()
                if any(name in a for a in argv[:5]) and "up" not in argv)


def test_up_on_zmq_refuses_duplicates_restarts_edges_and_stops_on_sighup(
        tmp_path: Path, prefix: str) -> None:
    port = testing.free_port(span=3)
    url = f"zmq://127.0.0.1:{port}"
    up = Up(tmp_path, prefix, url)
    try:
        up.wait_up()
        children = set(fleet_pids(prefix)) - {up.proc.pid}
        assert len(children) >= 6, fleet_pids(prefix)  # hub, memory, brain, three edges

        # a second `up` on the same bus is refused before it starts anything
        t0 = time.monotonic()
        second = subprocess.run(testing.robobus_cmd("up", "--bus", url, "--report",
                                                    str(tmp_path / "up2")),
                                capture_output=True, text=True, env=_env(prefix), timeout=60,
                                cwd=REPO)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "a fleet is already running" in second.stderr and "--join" in second.stderr
        assert not (tmp_path / "up2").exists()
        print(f"LIFECYCLE second-up zmq: refused (exit 1) in {time.monotonic() - t0:.2f} s, "
              "processes started 0")

        # a second edge with a live robot's name is refused
        t0 = time.monotonic()
        dup = subprocess.run(testing.robobus_cmd("edge", "--profile", "unitree_g1", "--name", "g1",
                                                 "--bus", url),
                             capture_output=True, text=True, env=_env(prefix), timeout=60, cwd=REPO)
        assert dup.returncode == 3, dup.stdout + dup.stderr
        assert "robot 'g1' is already online" in dup.stderr
        assert set(fleet_pids(prefix)) - {up.proc.pid} == children  # nothing joined or left
        print(f"LIFECYCLE second-edge-same-name zmq: refused (exit 3) in "
              f"{time.monotonic() - t0:.2f} s, the live g1 untouched")

        # --join adds only edges: a duplicate name fails, a new robot joins and leaves again
        dup_join = subprocess.run(
            testing.robobus_cmd("up", "--bus", url, "--join", "--profiles", "unitree_g1",
                                "--report", str(tmp_path / "join1")),
            capture_output=True, text=True, env=_env(prefix), timeout=90, cwd=REPO)
        assert dup_join.returncode == 1 and "robot 'g1' is already online" in dup_join.stderr, \
            dup_join.stdout + dup_join.stderr
        joiner = Up(tmp_path, prefix, url, "--join", "--profiles", str(REPO / "profiles" / "template.yaml"))
        try:
            joiner.wait_up()
            assert edge_pid(prefix, "my_robot_1") > 0
            started = set(fleet_pids(prefix)) - children - {up.proc.pid, joiner.proc.pid}
            assert len(started) == 1, started  # its edge only: no second memory, brain or hub
            joiner.proc.send_signal(signal.SIGTERM)
            assert joiner.proc.wait(30) == 0, joiner.text()
        finally:
            joiner.stop()
        assert set(fleet_pids(prefix)) - {up.proc.pid} == children

        # kill -9 of an edge: `up` restarts it and the robot is online again
        old = edge_pid(prefix, "g1")
        killed_ns = time.time_ns()
        os.kill(old, signal.SIGKILL)
        back_s = anyio.run(_online_again, url, prefix, "g1", killed_ns, 20.0)
        new = edge_pid(prefix, "g1")
        assert new != old and up.proc.poll() is None
        print(f"LIFECYCLE edge-kill9-under-up zmq: restarted, online again {back_s:.2f} s "
              "after kill -9")

        # kill -9 of the brain: restarted too, and ready again (it does not stop the fleet)
        brain = next(pid for pid, argv in fleet_pids(prefix).items() if "brain" in argv)
        killed_ns = time.time_ns()
        os.kill(brain, signal.SIGKILL)
        ready_s = anyio.run(_brain_ready_again, url, prefix, killed_ns, 20.0)
        assert up.proc.poll() is None
        print(f"LIFECYCLE brain-kill9-under-up zmq: restarted, ready again {ready_s:.2f} s "
              "after kill -9")

        # kill -9 of the hub `up` started: restarted, and the fleet serves a new instruction
        hub = _infra_pid(prefix, "hub")
        os.kill(hub, signal.SIGKILL)
        back_s = _restarted(prefix, "hub", hub, port, 20)
        done_s = anyio.run(_fresh_task_done, url, prefix, 45.0)
        assert up.proc.poll() is None, up.text()
        print(f"LIFECYCLE hub-restart-under-up zmq: hub kill -9 -> listening again after "
              f"{back_s:.2f} s, a new instruction done {done_s:.2f} s after that")

        # SIGHUP (the terminal closed): `up` stops the fleet cleanly and exits
        children = set(fleet_pids(prefix)) - {up.proc.pid}
        up.proc.send_signal(signal.SIGHUP)
        up.proc.wait(30)
        gone_s = wait_until(lambda: not any(alive(p) for p in children), 10, "children gone")
        print(f"LIFECYCLE up-sighup zmq: exit {up.proc.returncode}, children gone {gone_s:.2f} s "
              "after up exited, hub ports free")
        assert up.proc.returncode == 0, up.text()
        assert "fleet stopped" in up.text()
        assert _ports_free(port, port + 1, port + 2)
    finally:
        up.stop()


def test_up_on_mqtt_kill9_leaves_no_process_and_frees_the_port(
        tmp_path: Path, prefix: str) -> None:
    port = testing.free_port()
    url = f"mqtt://127.0.0.1:{port}"
    up = Up(tmp_path, prefix, url)  # starts its own Mosquitto: none listens on that port
    try:
        up.wait_up()
        children = set(fleet_pids(prefix)) - {up.proc.pid}
        names = " ".join(" ".join(argv) for argv in fleet_pids(prefix).values())
        assert "mosquitto" in names and len(children) >= 6

        dup = subprocess.run(testing.robobus_cmd("edge", "--profile", "agilex_dual_arm",
                                                 "--name", "agilex", "--bus", url),
                             capture_output=True, text=True, env=_env(prefix), timeout=60, cwd=REPO)
        assert dup.returncode == 3, dup.stdout + dup.stderr
        assert "robot 'agilex' is already online" in dup.stderr

        # SIGTERM, then kill -9, of the Mosquitto `up` started: restarted (it keeps its
        # persistence file), and the fleet serves a new instruction each time
        for sig in (signal.SIGTERM, signal.SIGKILL):
            broker = _infra_pid(prefix, "mosquitto")
            os.kill(broker, sig)
            back_s = _restarted(prefix, "mosquitto", broker, port, 20)
            done_s = anyio.run(_fresh_task_done, url, prefix, 45.0)
            assert up.proc.poll() is None, up.text()
            print(f"LIFECYCLE broker-restart-under-up mqtt: {sig.name} of mosquitto -> "
                  f"listening again after {back_s:.2f} s, a new instruction done {done_s:.2f} s "
                  "after that")
        children = set(fleet_pids(prefix)) - {up.proc.pid}

        up.proc.kill()  # kill -9 of `up` alone: its children are in their own sessions
        up.proc.wait(10)
        gone_s = wait_until(lambda: not any(alive(p) for p in children), 15, "children gone")
        free_s = wait_until(lambda: _ports_free(port), 10, "broker port free")
        print(f"LIFECYCLE up-kill9 mqtt: children gone {gone_s:.2f} s after up died, broker "
              f"port free {free_s:.2f} s after that")
    finally:
        up.stop()
