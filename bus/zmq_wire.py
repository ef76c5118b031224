"""Endpoints and framing shared by the ZeroMQ hub and the ZeroMQ backend.

A hub URL names three endpoints:

* ``zmq://HOST:PORT`` -> XSUB ``tcp://HOST:PORT`` (publishers connect PUB), XPUB
  ``tcp://HOST:PORT+1`` (subscribers connect SUB), ROUTER ``tcp://HOST:PORT+2`` (control:
  hello/heartbeat/last will, acknowledged publishes, retained snapshots).
* ``zmq+ipc:///path`` -> ``ipc:///path.pub``, ``ipc:///path.sub``, ``ipc:///path.ctl``.

Data messages are two frames, ``[topic, body]`` (ZeroMQ prefix-matches the topic frame);
``body`` is a 2-byte big-endian header length, the header, then the payload. The header is a
msgpack map (see :class:`Head`): the message's optional headers plus ``c`` (publishing client)
and ``n`` (a per-topic sequence number that lets subscribers count messages lost at a
high-water mark).
Two frames, not three: on 2 cores each extra frame costs microseconds per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import msgspec
import zmq

from robobus.bus.errors import ConnectError
from robobus.bus.message import Message
from robobus.bus.topics import remember

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7650

# Control commands (DEALER -> ROUTER and back).
HELLO, HEARTBEAT, BYE, PUB, ACK, SNAP, WHO = b"HELLO", b"HB", b"BYE", b"PUB", b"ACK", b"SNAP", b"WHO"
# Durable stream: the recorder sends DURABLE name once its subscriptions exist; the hub then
# streams DATA h topic body; the recorder answers DACK h (processed up to and including h).
DURABLE, DATA, DACK = b"DURABLE", b"DATA", b"DACK"
#: the hub's answer to DURABLE when it keeps no replay buffer: the client subscribes normally
NO_DURABLE = b"NODURABLE"
#: the hub's answer to an acknowledged publish its policy refuses: DENY ack_id topic
DENY = b"DENY"
#: acknowledged publishes coalesced: ``PUBS first_id batch`` carries n publishes (ids first_id
#: .. first_id+n-1, see :func:`encode_batch`); the hub answers ``ACKS first_id n`` once, after a
#: ``DENY`` for each one its policy refuses. ``PUB ack_id topic header payload`` (answered
#: ``ACK ack_id``) stays accepted.
PUBS, ACKS = b"PUBS", b"ACKS"
#: what a hub speaks beyond the first protocol, space-separated, after its answer to a HELLO:
#: ``HELLO features``. A hub older than ``PUBS`` answers a bare ``HELLO``; its clients then send
#: every acknowledged publish as a single ``PUB`` (a rolling upgrade, robots before the hub).
FEATURES = PUBS
#: a batch's entries: (topic, header, payload)
Entry = tuple[bytes, bytes, bytes]
#: readiness probes and snapshot fences: ``$robobus/probe/{client id}/...``
PROBE_PREFIX = "$robobus/probe/"
#: messages a durable client may have unacknowledged (keep its subscription buffer larger)
DURABLE_WINDOW = 20_000

#: High-water marks, chosen per socket class and counted (never unlimited; see docs/bus.md).
DATA_HWM = 200_000
CONTROL_HWM = 100_000


# Plain ints: combining pyzmq's enum flags (``SNDMORE | flags`` in ``send_multipart``) costs
# ~0.65 µs an operation, more than a frame's send; a profile counted 53k of them per run.
SNDMORE = int(zmq.SNDMORE)
NOBLOCK = int(zmq.NOBLOCK)
EVENTS = int(zmq.EVENTS)
POLLIN = int(zmq.POLLIN)


def send_frames(sock: zmq.Socket, frames: list[bytes], flags: int = 0) -> None:
    """``sock.send_multipart(frames, flags)`` with int flags: no enum arithmetic per frame."""
    send, more = sock.send, flags | SNDMORE
    for frame in frames[:-1]:
        send(frame, more)
    send(frames[-1], flags)


def readable(sock: zmq.Socket) -> bool:
    """Whether ``sock`` has a message waiting (one ``EVENTS`` query, ~1.5 µs, where a failed
    non-blocking recv raises ``zmq.Again`` for ~3.5 µs)."""
    # pyzmq types getsockopt as int | bytes | str for every option; EVENTS is an int
    return bool(cast(int, sock.getsockopt(EVENTS)) & POLLIN)


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
    publish, subscribe, control = (f"tcp://{host}:{p}" for p in ports)
    return Endpoints(publish, subscribe, control, tcp_ports=ports,
                     host=parts.hostname or DEFAULT_HOST, embed=embed, durable=durable)


class Head(msgspec.Struct, omit_defaults=True):
    """A data header on the wire: a msgpack map with short keys, empty ones left out.

    Decoded into a typed struct, not a dict: a header with a wrong type (a numeric sender, a
    text sequence number) is refused as a malformed frame instead of travelling on.
    """

    r: bool = False  # retained
    rt: str | None = None  # response topic
    cd: bytes | None = None  # correlation data
    s: str | None = None  # sender name
    c: str | None = None  # publishing client id
    n: int | None = None  # per (client, topic) sequence number


_head_decoder = msgspec.msgpack.Decoder(Head)
_head_encode = msgspec.msgpack.Encoder().encode
_NO_HEAD = Head()


def encode_header(msg: Message, client: str, seq: int) -> bytes:
    return _head_encode(Head(msg.retain, msg.response_topic or None, msg.correlation,
                             msg.sender or None, client, seq))


def pack_body(header: bytes, payload: bytes) -> bytes:
    return len(header).to_bytes(2, "big") + header + payload


def decode_body(topic: bytes, body: bytes) -> tuple[Message, Head]:
    """The Message in a ``[topic, body]`` data frame pair, with its header.

    Raises ValueError (or a msgspec.DecodeError) when the body is malformed.
    """
    end = 2 + int.from_bytes(body[:2], "big")
    if len(body) < end:  # also a body shorter than the length field itself
        raise ValueError("data frame shorter than its header")
    return decode_frames([topic, memoryview(body)[2:end], body[end:]])


def decode_frames(frames: list[Any]) -> tuple[Message, Head]:
    """Build a Message from ``[topic, header, payload]`` (also a retained snapshot entry)."""
    topic, header, payload = frames
    head = _head_decoder.decode(header) if header else _NO_HEAD
    name = _topics.get(topic)
    if name is None:
        name = remember(_topics, topic, topic.decode())
    # Positional: on the hot path keyword arguments cost ~0.6 µs per message.
    return Message(name, payload, head.r, 0, head.rt, head.cd, head.s), head


_batch_encode = msgspec.msgpack.Encoder().encode
_batch_decoder = msgspec.msgpack.Decoder(list[tuple[bytes, bytes, bytes]])


def encode_batch(entries: list[Entry]) -> bytes:
    """A ``PUBS`` body: one msgpack array of ``[topic, header, payload]`` arrays. One frame for
    the batch, not three per publish: a frame costs a send and a receive call each side."""
    return _batch_encode(entries)


def decode_batch(blob: bytes) -> list[Entry]:
    """The entries of a ``PUBS`` body; raises msgspec.DecodeError if malformed."""
    return _batch_decoder.decode(blob)


def pack_id(ack_id: int) -> bytes:
    return ack_id.to_bytes(8, "big")


def unpack_id(frame: bytes) -> int:
    return int.from_bytes(frame, "big")


#: decoded topic names (a few topics carry nearly all traffic)
_topics: dict[bytes, str] = {}
