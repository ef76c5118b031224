"""A client of this release on a hub older than coalesced publishes (a rolling upgrade: the
robots upgraded, the hub not yet).

The hub is a real ``robobus hub`` process run from a ``git archive`` of the last commit before
``PUBS`` (7fcc528). It answers a bare ``HELLO``; the client then sends every acknowledged
publish as a single ``PUB``, alone or inside ``Bus.coalesce()``. Before, every acknowledged
publish went as ``PUBS``, which that hub ignores: each failed after the 10 s ack timeout.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import msgspec
import pytest
import zmq

from bench.memory_ingest import code_tree
from robobus import testing
from robobus.bus import Bus

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]
ROOT = Path(__file__).resolve().parents[2]
#: the last commit whose hub knows only the single PUB
OLD_HUB = "4853d2732486a79f009f4c5bb88838c6a6f90f19"


def _bare_hello(port: int) -> list[bytes]:
    ctx = zmq.Context()
    ctl = ctx.socket(zmq.DEALER)
    ctl.connect(f"tcp://{testing.LOOPBACK}:{port + 2}")
    try:
        ctl.send_multipart([b"HELLO", msgspec.msgpack.encode({"keepalive": 5.0})])
        assert ctl.poll(10_000), "the old hub did not answer HELLO"
        return ctl.recv_multipart()
    finally:
        ctl.close(0)
        ctx.term()


async def test_acked_publishes_reach_a_hub_older_than_batches() -> None:
    have = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD_HUB}^{{commit}}"],
                          capture_output=True)
    if have.returncode:
        pytest.skip(f"this checkout lacks commit {OLD_HUB[:10]} (a shallow clone)")
    port = testing.free_port(span=3)
    url = f"zmq://{testing.LOOPBACK}:{port}"
    with code_tree(OLD_HUB) as env, \
            testing.spawn(testing.robobus_cmd("hub", "--bus", url), name="old-hub", env=env):
        for p in (port, port + 1, port + 2):
            testing.wait_port(p, timeout=30)
        assert _bare_hello(port) == [b"HELLO"]  # it is the old hub: no features announced
        got: list[bytes] = []
        async with Bus.connect(url, name="tx") as tx, Bus.connect(url, name="rx") as rx, \
                rx.subscribe("x/#") as sub:
            with anyio.fail_after(5):  # acked at once; before, each failed after 10 s
                await tx.publish("x/1", b"alone", qos=1)
                with tx.coalesce():
                    acks = [await tx.post("x/2", str(i).encode(), qos=1) for i in range(5)]
                for ack in acks:
                    await ack
                while len(got) < 6:
                    got.append((await sub.get()).payload)
    assert got == [b"alone", b"0", b"1", b"2", b"3", b"4"]
