"""Endpoints and framing shared by the ZeroMQ hub and the ZeroMQ backend.

A hub URL names three endpoints:

* ``zmq://HOST:PORT`` -> XSUB ``tcp://HOST:PORT`` (publishers connect PUB), XPUB
  ``tcp://HOST:PORT+1`` (subscribers connect SUB), ROUTER ``tcp://HOST:PORT+2`` (control:
  hello/heartbeat/last will, acknowledged publishes, retained snapshots).
* ``zmq+ipc:///path`` -> ``ipc:///path.pub``, ``ipc:///path.sub``, ``ipc:///path.ctl``.

Data messages are two frames, ``[topic, body]`` (ZeroMQ prefix-matches the topic frame);
``body`` is a 2-byte big-endian header length, the header, then the payload. The header is a
msgpack map (see :meth:`bus.message.Message.headers`) plus ``c`` (publishing client) and ``n``
(a per-topic sequence number that lets subscribers count messages lost at a high-water mark).
Two frames, not three: on 2 cores each extra frame costs microseconds per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import msgspec

from bus.errors import ConnectError
from bus.message import Message

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7650

# Control commands (DEALER -> ROUTER and back).
HELLO, HEARTBEAT, BYE, PUB, ACK, SNAP, WHO = b"HELLO", b"HB", b"BYE", b"PUB", b"ACK", b"SNAP", b"WHO"
# Durable stream: the recorder sends DURABLE name once its subscriptions exist; the hub then
# streams DATA h topic body; the recorder answers DACK h (processed up to and including h).
DURABLE, DATA, DACK = b"DURABLE", b"DATA", b"DACK"
#: the hub's answer to DURABLE when it keeps no replay buffer: the client subscribes normally
NO_DURABLE = b"NODURABLE"
#: messages a durable client may have unacknowledged (keep its subscription buffer larger)
DURABLE_WINDOW = 20_000

#: High-water marks, chosen per socket class and counted (never unlimited; see docs/bus.md).
DATA_HWM = 200_000
CONTROL_HWM = 100_000


@dataclass(frozen=True, slots=True)
class Endpoints:
    publish: str  # hub XSUB
    subscribe: str  # hub XPUB
    control: str  # hub ROUTER
    tcp_ports: tuple[int, ...] = ()
    host: str = DEFAULT_HOST
    embed: bool = False
    durable: str | None = None


def endpoints(url: str) -> Endpoints:
    """Parse a ``zmq://`` / ``zmq+tcp://`` / ``zmq+ipc://`` URL into the hub's endpoints."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    embed = query.get("embed", ["0"])[0] in ("1", "true", "yes")
    durable = query.get("durable", [None])[0]
    if parts.scheme == "zmq+ipc":
        base = parts.path
        if not base:
            raise ConnectError(url, "zmq+ipc URL needs a path, e.g. zmq+ipc:///tmp/robobus")
        return Endpoints(f"ipc://{base}.pub", f"ipc://{base}.sub", f"ipc://{base}.ctl", embed=embed,
                         durable=durable)
    host = parts.hostname or DEFAULT_HOST
    port = parts.port or DEFAULT_PORT
    if ":" in host:
        host = f"[{host}]"
    ports = (port, port + 1, port + 2)
    return Endpoints(*(f"tcp://{host}:{p}" for p in ports), tcp_ports=ports,
                     host=parts.hostname or DEFAULT_HOST, embed=embed, durable=durable)


_header_decoder = msgspec.msgpack.Decoder(dict)
_encode = msgspec.msgpack.encode


def encode_header(msg: Message, client: str, seq: int) -> bytes:
    head = msg.headers()
    head["c"] = client
    head["n"] = seq
    return _encode(head)


def pack_body(header: bytes, payload: bytes) -> bytes:
    return len(header).to_bytes(2, "big") + header + payload


def split_body(body: bytes) -> tuple[bytes, bytes]:
    """(header, payload) of a data body; raises ValueError if it is malformed."""
    if len(body) < 2:
        raise ValueError("data frame shorter than its header length")
    size = int.from_bytes(body[:2], "big")
    if len(body) < 2 + size:
        raise ValueError("data frame shorter than its header")
    return body[2:2 + size], body[2 + size:]


def decode_frames(frames: list[bytes]) -> tuple[Message, dict]:
    """Build a Message from ``[topic, header, payload]``; returns it with the raw header."""
    topic, header, payload = frames
    head = _header_decoder.decode(header) if header else {}
    msg = Message(
        topic.decode(),
        payload,
        retain=bool(head.get("r", False)),
        response_topic=head.get("rt"),
        correlation=head.get("cd"),
        sender=head.get("s"),
    )
    return msg, head
