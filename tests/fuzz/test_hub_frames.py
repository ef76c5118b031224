"""Malformed ZeroMQ frames from a raw client (no robobus library): the hub and its clients live.

Found by the fuzz: one undecodable HELLO, PUB header or SNAP pattern on the hub's control socket
ended the hub process (the whole bus); a data frame with a deeply nested header raised out of a
client's socket reader.
"""

from __future__ import annotations

import anyio
import pytest
import zmq

from robobus import testing
from robobus.bus import Bus
from robobus.bus.zmq_wire import pack_body

pytestmark = pytest.mark.anyio

DEEP = b"\x81\xa1a" + b"\x91" * 5000 + b"\x01"
CONTROL = [
    [b"HELLO", b"\xc1"],                                    # not msgpack
    [b"HELLO", DEEP],                                       # nested too deep
    [b"HELLO", b"\x01"],                                    # not a map
    [b"HELLO", b"\x81\xa4will\x05"],                        # a will that is not one
    [b"PUB", b"1", b"x/1", b"\xc1", b"p"],                  # bad header
    [b"PUB", b"1", b"x/1", b"\x01", b"p"],                  # header not a map
    [b"SNAP", b"1", b"\xff"],                               # pattern not UTF-8
]


async def test_hub_and_clients_survive_malformed_frames() -> None:
    with testing.hub() as url:
        port = int(url.rsplit(":", 1)[1])
        ctx = zmq.Context()
        ctl, pub = ctx.socket(zmq.DEALER), ctx.socket(zmq.PUB)
        ctl.connect(f"tcp://{testing.LOOPBACK}:{port + 2}")
        pub.connect(f"tcp://{testing.LOOPBACK}:{port}")
        try:
            async with Bus.connect(url, name="victim") as bus, bus.subscribe("x/#") as sub:
                for frames in CONTROL:
                    ctl.send_multipart(frames)
                with anyio.fail_after(10):
                    got = b""
                    while got != b"ok":  # a raw PUB needs its subscription to propagate first
                        pub.send_multipart([b"x/1", pack_body(DEEP, b"bad")])
                        pub.send_multipart([b"x/1", pack_body(b"", b"ok")])
                        with anyio.move_on_after(0.2):
                            got = (await sub.get()).payload
                    await bus.publish("x/2", b"through the hub", qos=1)  # acked: the hub lives
                    while (await sub.get()).payload != b"through the hub":
                        pass
        finally:
            ctl.close(0)
            pub.close(0)
            ctx.term()



BAD_KEEPALIVES = [float("nan"), float("inf"), -1.0, 0, 1e9, "2", True]


def test_hello_with_a_keepalive_out_of_range_is_denied() -> None:
    """A NaN (or infinite) keepalive made the client immortal: 2.5 x NaN never elapses, so its
    will never fired. The hub now denies such a hello, names the range, and registers nothing."""
    import msgspec

    with testing.hub() as url:
        port = int(url.rsplit(":", 1)[1])
        ctx = zmq.Context()
        ctl = ctx.socket(zmq.DEALER)
        ctl.connect(f"tcp://{testing.LOOPBACK}:{port + 2}")

        def ask(frames: list[bytes]) -> list[bytes]:
            ctl.send_multipart(frames)
            assert ctl.poll(5000), f"the hub did not answer {frames[0]!r}"
            return ctl.recv_multipart()

        try:
            for keepalive in BAD_KEEPALIVES:
                cmd, what, reason = ask([b"HELLO", msgspec.msgpack.encode({"keepalive": keepalive})])
                assert (cmd, what) == (b"DENY", b"HELLO"), keepalive
                assert b"keepalive must be a finite number of seconds" in reason
                assert ask([b"HB"]) == [b"WHO"]  # not registered: the hub asks who it is
            assert ask([b"HELLO", msgspec.msgpack.encode({"keepalive": 0.5})]) == [b"HELLO", b"PUBS"]
        finally:
            ctl.close(0)
            ctx.term()
