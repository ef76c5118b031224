"""A ``robobus dashboard`` process for the dashboard tests, and its printed URL."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from robobus import testing


@contextlib.contextmanager
def dashboard(tmp: Path, bus_url: str, prefix: str, *extra: str,
              env: dict[str, str] | None = None, name: str = "dashboard") -> Iterator[str]:
    """Run ``robobus dashboard`` on a free port; yield the http URL it prints once it answers."""
    argv = testing.robobus_cmd("dashboard", "--bus", bus_url, "--prefix", prefix, "--port", "0",
                               *extra)
    log = tmp / "logs" / f"{name}.log"
    with testing.spawn(argv, name=name, env=env, log_dir=tmp / "logs") as proc:
        deadline = time.monotonic() + 30
        while (url := _url(log)) is None:
            assert proc.poll() is None, f"dashboard exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no URL printed in 30 s: {log.read_text()}"
            time.sleep(0.05)
        yield url
        assert proc.poll() is None, f"the dashboard died: {log.read_text()[-2000:]}"


def _url(log: Path) -> str | None:
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if line.startswith("robobus dashboard: http://"):
            return line.split(": ", 1)[1].strip()
    return None
