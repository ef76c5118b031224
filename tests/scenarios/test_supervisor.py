"""The process supervisor: process groups, logs, scripted kills, crash detection, no orphans."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from robobus.launch.errors import ProcessCrashed
from robobus.launch.supervisor import Supervisor

pytestmark = pytest.mark.anyio

# A parent that starts a child in its own group and prints both pids; both ignore nothing.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("pids", child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not alive
        return fh.read().split()[2] != "Z"


async def _child_pid(log: Path) -> int:
    with anyio.fail_after(10):
        while "pids" not in (text := log.read_text() if log.exists() else ""):
            await anyio.sleep(0.02)  # the child's output is the only signal there is
    return int(text.split()[1])


async def test_stop_all_kills_the_whole_group(tmp_path: Path) -> None:
    async with Supervisor(tmp_path) as sup:
        managed = await sup.start("parent", [sys.executable, "-c", PARENT], critical=False)
        child = await _child_pid(managed.log_path)
        assert _alive(child)
        assert os.getpgid(managed.pid) == managed.pid  # its own process group
    assert managed.returncode is not None
    with anyio.fail_after(5):  # SIGKILL is delivered asynchronously; a loaded host may lag
        while _alive(child):
            await anyio.sleep(0.02)


async def test_kill_is_expected_and_not_a_crash(tmp_path: Path) -> None:
    async with Supervisor(tmp_path) as sup:
        managed = await sup.start("victim", [sys.executable, "-c", "import time; time.sleep(60)"])
        sup.kill("victim")
        with anyio.fail_after(5):
            await managed.exited.wait()
        assert managed.returncode == -9


async def test_critical_exit_raises_with_log_tail(tmp_path: Path) -> None:
    code = "import sys; print('boom: disk on fire', flush=True); sys.exit(3)"
    with pytest.raises(ProcessCrashed) as info:
        async with Supervisor(tmp_path) as sup:
            await sup.start("memory", [sys.executable, "-c", code])
            await anyio.sleep(30)  # cancelled by the crash
    assert info.value.name == "memory" and info.value.code == 3
    assert "disk on fire" in str(info.value)


async def test_sigterm_ignoring_process_is_killed(tmp_path: Path) -> None:
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    async with Supervisor(tmp_path) as sup:
        managed = await sup.start("stubborn", [sys.executable, "-c", stubborn], critical=False)
        with anyio.fail_after(10):
            while "ready" not in managed.log_path.read_text():
                await anyio.sleep(0.02)
        with anyio.fail_after(5):
            await sup.stop(["stubborn"], timeout=0.5)
        assert managed.returncode == -9
