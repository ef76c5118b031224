"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright
(``playwright-core`` from npm, pinned in tests/dashboard/package.json) against a fleet of agent
processes on a ZeroMQ hub.

The page shows the demo fleet online, an instruction typed into its box runs to ``done`` on the
page, and a robot whose edge process is killed (``kill -9``) turns offline on the page.
Screenshots go to the test's tmp dir; with ``ROBOBUS_UPDATE_SCREENSHOT=1`` the ``done`` one
is also copied to docs/dashboard.png (the README's picture), so a plain run leaves the tree
as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from bench import scenes
from tests.brain.test_processes import fleet
from tests.dashboard.conftest import dashboard

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
HERE = Path(__file__).parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
INSTRUCTION = "Bring the fruit nearest the cup and a fruit knife to the office desk"
KILLED = "agilex"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} "
                    "(apt-get install chromium; tests/run.sh does)")
async def test_the_page_shows_the_fleet_runs_an_instruction_and_sees_a_robot_die(
        tmp_path: Path, hub_url: str) -> None:
    assert (HERE / "node_modules" / "playwright-core").is_dir(), \
        "playwright-core is not installed: npm ci --prefix tests/dashboard --ignore-scripts"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    robots = [r["name"] for r in scenes.DEMO_ROBOTS]
    async with fleet(tmp_path, hub_url, scenes.DEMO_SCENE, scenes.DEMO_ROBOTS) as (fl, _bus):
        with dashboard(tmp_path, hub_url, fl.prefix) as url:
            argv = ["node", str(HERE / "browser.mjs"), url, str(shots), INSTRUCTION, KILLED, *robots]
            said: list[str] = []
            started = time.monotonic()
            async with await anyio.open_process(argv, cwd=HERE, stderr=subprocess.STDOUT) as node:
                assert node.stdin is not None and node.stdout is not None
                with anyio.fail_after(150):
                    async for chunk in node.stdout:
                        for line in chunk.decode().splitlines():
                            said.append(f"{time.monotonic() - started:6.1f}s {line}")
                            print(said[-1], flush=True)
                            if line == f"kill {KILLED}":
                                fl.kill9(KILLED)
                                await node.stdin.send(b"killed\n")
                    await node.wait()
    assert node.returncode == 0 and said[-1].endswith(" ok"), "\n".join(said)
    done = [line.split()[-1] for line in said if " done " in line]
    assert done and fl.status(done[0]) is not None and fl.status(done[0]).status == "done"
    assert sorted(p.name for p in shots.iterdir()) == ["1-fleet.png", "2-done.png", "3-offline.png"]
    if os.environ.get("ROBOBUS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shots / "2-done.png", HERE.parents[1] / "docs" / "dashboard.png")
