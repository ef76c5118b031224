"""Fixtures of the open-contract checks: the npm packages of a folder, installed when missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

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
