"""The library never writes to a user's stdout unless configured (structlog's default would)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import anyio, sys
from robobus.bus import Bus
async def main():
    async with Bus.connect(sys.argv[1], name="quiet") as bus:  # logs bus_state (debug)
        async with bus.subscribe("q/#") as sub:
            await bus.publish("q/a", b"x", qos=1)
            await sub.get()
anyio.run(main)
print("END")
"""


def test_a_library_user_sees_nothing_on_stdout(hub_url: str) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, hub_url], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout == "END\n", out.stdout


def test_a_configured_structlog_is_left_alone() -> None:
    script = ("import structlog, sys; structlog.configure(logger_factory="
              "structlog.PrintLoggerFactory(file=sys.stdout)); import robobus; "
              "structlog.get_logger('robobus.x').info('mine')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "mine" in out.stdout, out
