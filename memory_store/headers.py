"""What a record keeps of a message besides topic and payload: the retain flag, the QoS and
the MQTT 5 properties the bus exposes on a received message (response topic, correlation
data, the sender, which travels as a user property on MQTT and a header on ZeroMQ, and the
MQTT 5 content type, ``Message.content_type``, which replay publishes again).

QoS on ZeroMQ: the hub does not tell a subscriber which QoS the publisher used, so ZeroMQ
recordings say ``qos=0``. The publisher's other MQTT 5 user properties
(``Message.user_properties``) and its Payload Format Indicator are kept too (optional keys
``u`` and ``pf``: records written before them read without them).

The header is stored between the topic id and the payload, only for a message that has any:
the topic id's top bit says that one follows. A record written before headers existed has that
bit clear and reads as ``retain=False, qos=0`` without properties, so old stores read as before.

Layout: one flag byte (bit 0 retain, bits 1-2 QoS, bit 3 properties follow), then, with
properties, a 2-byte big-endian length and the properties as a msgpack map.
"""

from __future__ import annotations

import msgspec

from robobus.bus.message import Message

#: set in a stored topic id when a header follows it
HEADED = 0x8000_0000
TID_MASK = 0x7FFF_FFFF
_RETAIN, _QOS_SHIFT, _PROPS = 0x01, 1, 0x08
#: cached headers of messages without per-message properties (a few senders carry nearly all)
_CACHE_LIMIT = 4096


class Properties(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """The recorded MQTT 5 properties of one event (unknown keys are skipped on read, so more
    can be added without breaking older readers)."""

    response_topic: str | None = msgspec.field(default=None, name="rt")
    correlation: bytes | None = msgspec.field(default=None, name="cd")
    sender: str | None = msgspec.field(default=None, name="s")
    content_type: str | None = msgspec.field(default=None, name="ct")
    user: tuple[tuple[str, str], ...] | None = msgspec.field(default=None, name="u")
    payload_format: int | None = msgspec.field(default=None, name="pf")


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Properties).decode
_cache: dict[tuple[bool, int, str | None, str | None], bytes] = {}


def pack(retain: bool, qos: int, props: Properties | None) -> bytes:
    """The stored header, or ``b""`` for a message with nothing beyond the defaults."""
    flags = (_RETAIN if retain else 0) | (min(max(qos, 0), 3) << _QOS_SHIFT)
    if props is None or props == _EMPTY:
        return bytes((flags,)) if flags else b""
    body = _encode(props)
    if len(body) > 0xFFFF:  # a correlation that large is kept out of the record, not failed
        body = _encode(Properties(props.response_topic, None, props.sender, props.content_type,
                                  props.user, props.payload_format))
        if len(body) > 0xFFFF:  # so are user properties that large
            body = _encode(Properties(props.response_topic, None, props.sender,
                                      props.content_type, None, props.payload_format))
    return bytes((flags | _PROPS,)) + len(body).to_bytes(2, "big") + body


def head_of(msg: Message) -> bytes:
    """The header to record for a received message (cached unless it has request headers)."""
    ctype = msg.content_type
    if msg.response_topic is None and msg.correlation is None and not msg.user_properties \
            and msg.payload_format is None:
        key = (msg.retain, msg.qos, msg.sender, ctype)
        head = _cache.get(key)
        if head is None:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.clear()
            props = Properties(sender=msg.sender, content_type=ctype) \
                if msg.sender or ctype else None
            head = _cache[key] = pack(msg.retain, msg.qos, props)
        return head
    return pack(msg.retain, msg.qos,
                Properties(msg.response_topic, msg.correlation, msg.sender, ctype,
                           msg.user_properties or None, msg.payload_format))


def unpack(value: bytes | memoryview, pos: int) -> tuple[bool, int, Properties | None, int]:
    """``(retain, qos, properties, payload start)`` of the header at ``value[pos:]``."""
    flags = value[pos]
    pos += 1
    props = None
    if flags & _PROPS:
        n = int.from_bytes(value[pos : pos + 2], "big")
        try:
            props = _decode(value[pos + 2 : pos + 2 + n])
        except msgspec.DecodeError:
            props = None  # a damaged header costs the properties, never the event
        pos += 2 + n
    return bool(flags & _RETAIN), (flags >> _QOS_SHIFT) & 0x03, props, pos


_EMPTY = Properties()
