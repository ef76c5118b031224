"""``robobus demo --dashboard PORT`` serves the dashboard beside the running demo, prints its URL,
keeps it up ``--hold`` seconds after the verdict (Ctrl-C ends the hold, not the run), and stops it
with the demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect

from robobus import testing

pytestmark = pytest.mark.anyio
FLEET = {"realman_1", "g1", "agilex"}


def _read_until(proc: subprocess.Popen[str], marker: str, seen: list[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} in: {''.join(seen)}")


class Fleet:
    """What the frames said: robots registered and online, tasks done."""

    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.online: set[str] = set()
        self.done: set[str] = set()

    def saw(self, frame: dict[str, object]) -> None:
        parts = str(frame.get("topic", "")).split("/")
        data = frame.get("data")
        if frame["kind"] != "bus" or not isinstance(data, dict):
            return
        if parts[0] == "robots" and len(parts) == 3 and parts[2] == "registration":
            self.registered.add(parts[1])
        elif parts[0] == "robots" and len(parts) == 3 and parts[2] == "alive" and data["online"]:
            self.online.add(parts[1])
        elif parts[0] == "tasks" and data.get("status") == "done":
            self.done.add(parts[1])

    def whole(self) -> bool:
        return self.registered == self.online == FLEET and bool(self.done)


async def _snapshot(ws: ClientConnection) -> Fleet:
    """The frames a client gets on connecting, up to ``live``."""
    hello = json.loads(await ws.recv())
    assert hello["kind"] == "hello" and hello["prefix"] == "robobus", hello
    fleet = Fleet()
    while (frame := json.loads(await ws.recv()))["kind"] != "live":
        fleet.saw(frame)
    return fleet


async def test_demo_serves_the_dashboard_while_it_runs(tmp_path: Path) -> None:
    port = testing.free_port()
    argv = testing.robobus_cmd("demo", "--speed", "20", "--quiet", "--report", str(tmp_path / "demo"),
                               "--dashboard", str(port), "--hold", "60")
    env = {**os.environ, "ROBOBUS_LOG": "warning"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    seen: list[str] = []
    try:
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(_read_until, proc, "dashboard:", seen)
        assert line.split("dashboard:", 1)[1].strip() == f"http://127.0.0.1:{port}/"
        async with await connect(f"ws://127.0.0.1:{port}/ws") as ws:
            live = await _snapshot(ws)  # the demo's fleet is still starting: the rest is live
            with anyio.fail_after(60):
                while not live.whole():
                    live.saw(json.loads(await ws.recv()))
        with anyio.fail_after(60):
            await anyio.to_thread.run_sync(_read_until, proc, "stays up", seen)
        assert not any(line.startswith(("PASS", "FAIL")) for line in seen)  # verdict comes after
        async with await connect(f"ws://127.0.0.1:{port}/ws") as ws:  # a page opened late
            late = await _snapshot(ws)
        assert late.registered == late.online == FLEET and late.done == live.done == {"t0"}
        proc.send_signal(signal.SIGINT)  # ends the hold; the report is still written
        out, _ = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
    finally:
        testing.stop(proc)  # type: ignore[arg-type]
    text = "".join(seen) + out
    assert proc.returncode == 0, text
    assert "PASS fruit-and-knife" in out and (tmp_path / "demo" / "timeline.png").exists(), text
    with pytest.raises(OSError):  # the dashboard went with the demo
        await anyio.connect_tcp("127.0.0.1", port)
