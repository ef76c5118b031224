"""The ZeroMQ client's control socket never blocks the event loop.

A CI run hung for 120 s in ``Bus.connect`` to a CURVE hub without keys: the hub had refused the
handshake before the hello went out, which leaves the client's DEALER with no connection to
queue on, and a blocking send then waits forever, with the whole loop (and the 5 s connect
deadline) stuck behind it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import zmq

from robobus.bus.backends.zmq import ZmqTransport
from robobus.bus.zmq_wire import HEARTBEAT

pytestmark = pytest.mark.anyio


async def test_a_control_send_with_no_hub_to_queue_on_returns_at_once() -> None:
    transport = ZmqTransport()
    transport.loop = asyncio.get_running_loop()
    transport.ctl = ctl = zmq.Context.instance().socket(zmq.DEALER)
    # IMMEDIATE: no pipe until a connection completes, the state a refused handshake leaves.
    # SNDTIMEO only bounds a send that blocks, so that a regression fails instead of hanging.
    ctl.setsockopt(zmq.IMMEDIATE, 1)
    ctl.setsockopt(zmq.SNDTIMEO, 3000)
    ctl.setsockopt(zmq.LINGER, 0)
    ctl.connect("tcp://127.0.0.1:9")  # the discard port: nothing answers
    try:
        started = time.monotonic()
        transport.send_control([HEARTBEAT])  # dropped, not raised
        assert time.monotonic() - started < 0.5
    finally:
        ctl.close(0)
