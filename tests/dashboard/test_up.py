"""``robobus up --dashboard PORT`` starts the dashboard beside the fleet, prints its URL, and
stops it with the fleet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from websockets.asyncio.client import connect

from robobus import testing

pytestmark = pytest.mark.anyio


def _read_until(proc: subprocess.Popen[str], marker: str, seen: list[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} in: {''.join(seen)}")


async def test_up_serves_the_dashboard(tmp_path: Path, hub_url: str, prefix: str) -> None:
    port = testing.free_port()
    argv = testing.robobus_cmd("up", "--bus", hub_url, "--speed", "20", "--report",
                               str(tmp_path / "up"), "--dashboard", str(port))
    env = {**os.environ, "ROBOBUS_PREFIX": prefix, "ROBOBUS_LOG": "warning"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    seen: list[str] = []
    try:
        with anyio.fail_after(90):
            line = await anyio.to_thread.run_sync(_read_until, proc, "dashboard:", seen)
        url = line.split("dashboard:", 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}/"
        registered: set[str] = set()
        online: set[str] = set()
        async with await connect(f"ws://127.0.0.1:{port}/ws") as ws:
            hello = json.loads(await ws.recv())
            assert hello["prefix"] == prefix and hello["may_instruct"] is True
            with anyio.fail_after(20):  # up announces a ready fleet: the snapshot has it all
                while (frame := json.loads(await ws.recv()))["kind"] != "live":
                    parts = frame.get("topic", "").split("/")
                    if frame["kind"] == "bus" and parts[0] == "robots" and len(parts) == 3:
                        if parts[2] == "registration":
                            registered.add(parts[1])
                        elif parts[2] == "alive" and frame["data"]["online"]:
                            online.add(parts[1])
        assert registered == online == {"realman_1", "g1", "agilex"}  # the demo fleet
        proc.send_signal(signal.SIGTERM)
        out, _ = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
    finally:
        testing.stop(proc)  # type: ignore[arg-type]
    assert proc.returncode == 0, "".join(seen) + out
    with pytest.raises(OSError):  # the dashboard went with the fleet
        await anyio.connect_tcp("127.0.0.1", port)
