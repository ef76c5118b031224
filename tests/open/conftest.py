"""Fixtures of the open-contract checks: the npm packages of a folder, installed when missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import anyio
import pytest

from robobus.bus import Bus
from robobus.schemas.messages import BrainStatus
from robobus.schemas.topics import Topics

OPEN = Path(__file__).resolve().parent


def npm_folder(folder: Path) -> Path:
    """``folder`` with its locked npm packages (tests/run.sh runs ``npm ci``; a bare pytest run
    installs them here the same way)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the open-contract checks (see tests/run.sh)")
    if not (folder / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"], cwd=folder,
                       check=True, timeout=300)
    return folder


@pytest.fixture(scope="session")
def open_npm() -> Path:
    """tests/open with @asyncapi/parser installed."""
    return npm_folder(OPEN)


async def brain_ready(bus: Bus, topics: Topics) -> None:
    """Wait for the brain's retained ``ready`` (it takes instructions only then: a client that
    sends once must not send to a brain still ``starting``)."""
    async with bus.subscribe(topics.brain_status, BrainStatus) as sub:
        with anyio.fail_after(30):
            async for msg in sub:
                if msg.data.state == "ready":
                    return
