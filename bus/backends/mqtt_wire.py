"""A fast decoder for incoming MQTT 5 PUBLISH packets, plugged into paho.

paho's generic ``Properties.unpack`` costs more per message than everything else on the receive
path put together (it scans every property name for each one it reads). The bus only needs a
handful of PUBLISH properties, so :class:`FastClient` decodes QoS 0/1 PUBLISH packets itself
and hands them to one callback; everything else (CONNACK, PUBACK, QoS 2, ...) stays with paho.

This overrides paho's private ``_handle_publish``; pyproject pins ``paho-mqtt`` to 2.x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt._packet import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from robobus.bus.message import Message

_SUB_ID, _RESPONSE_TOPIC, _CORRELATION, _USER, _CONTENT_TYPE = 0x0B, 0x08, 0x09, 0x26, 0x03
_FORMAT = 0x01
_FIXED = {0x02: 4, 0x23: 2}  # message expiry, topic alias
_MSGPACK, _JSON = "application/msgpack", "application/json"  # as schemas.codec names them


@dataclass(slots=True)
class Publish:
    """One decoded PUBLISH: what the bus needs of it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    sub_ids: list[int] = field(default_factory=list)
    response_topic: str | None = None
    correlation: bytes | None = None
    #: user properties in the order sent; None when there are none (no list per message)
    user: list[tuple[str, str]] | None = None
    content_type: str | None = None
    payload_format: int | None = None


def _vbi(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise MalformedPacket("variable byte integer longer than 4 bytes")


def _str16(buf: bytes | bytearray, pos: int) -> tuple[bytes, int]:
    n = (buf[pos] << 8) | buf[pos + 1]
    end = pos + 2 + n
    if end > len(buf):
        raise MalformedPacket("string runs past the end of the packet")
    return bytes(buf[pos + 2 : end]), end


def decode_publish(header: int, buf: bytes | bytearray) -> Publish:
    """Decode the variable header and payload of an MQTT 5 PUBLISH."""
    qos = (header & 0x06) >> 1
    topic, pos = _str16(buf, 0)
    mid = 0
    if qos:
        mid = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
    plen, pos = _vbi(buf, pos)
    end = pos + plen
    pub = Publish(topic.decode(), b"", qos, bool(header & 1), mid)
    while pos < end:
        ident, pos = _vbi(buf, pos)
        pos = _property(pub, ident, buf, pos)
    if pos != end:
        raise MalformedPacket("property length mismatch")
    pub.payload = bytes(buf[end:])
    return pub


def _property(pub: Publish, ident: int, buf: bytes | bytearray, pos: int) -> int:
    if ident == _SUB_ID:
        value, pos = _vbi(buf, pos)
        pub.sub_ids.append(value)
    elif ident == _RESPONSE_TOPIC:
        raw, pos = _str16(buf, pos)
        pub.response_topic = raw.decode()
    elif ident == _CORRELATION:
        pub.correlation, pos = _str16(buf, pos)
    elif ident == _USER:
        key, pos = _str16(buf, pos)
        text, pos = _str16(buf, pos)
        if pub.user is None:
            pub.user = []
        pub.user.append((key.decode(), text.decode()))
    elif ident == _CONTENT_TYPE:
        raw, pos = _str16(buf, pos)
        pub.content_type = raw.decode()
    elif ident == _FORMAT:
        pub.payload_format = buf[pos]
        pos += 1
    elif ident in _FIXED:
        pos += _FIXED[ident]
    else:
        raise MalformedPacket(f"unexpected PUBLISH property 0x{ident:02x}")
    return pos


class FrozenProperties(Properties):
    """PUBLISH properties carrying only the sender and content type, packed once (paho packs
    them per message)."""

    _packed: bytes

    def __init__(self, sender: str | None, content_type: str | None) -> None:
        super().__init__(PacketTypes.PUBLISH)
        _label(self, content_type)
        if sender:
            self.UserProperty = ("sender", sender)
        object.__setattr__(self, "_packed", super().pack())

    def pack(self) -> bytes:
        return self._packed


def _label(props: Properties, content_type: str | None) -> None:
    """Content Type, and Payload Format Indicator 1 (UTF-8) for JSON (issue 14)."""
    if content_type:
        props.ContentType = content_type
        if content_type == _JSON:
            props.PayloadFormatIndicator = 1


def sniff(payload: bytes) -> str | None:
    """What a payload given as bytes is: a msgpack map, a JSON object, or unknown (None);
    the rule of :func:`robobus.schemas.codec.sniff` (the backend imports no schemas)."""
    if not payload:
        return None
    first = payload[0]
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return _MSGPACK
    if first == 0x7B:  # '{'
        return _JSON
    return None


def publish_properties(msg: Message, cache: dict[tuple[str | None, str | None], Properties]
                       ) -> Properties | None:
    """MQTT 5 properties for ``msg``'s headers (sender and ``user_properties`` as user
    properties, content type, payload format), cached when static."""
    ctype = msg.content_type or sniff(msg.payload)
    if msg.response_topic is None and msg.correlation is None and not msg.user_properties \
            and msg.payload_format is None:
        if not msg.sender and not ctype:
            return None
        key = (msg.sender, ctype)
        cached = cache.get(key)
        if cached is None:
            cached = cache[key] = FrozenProperties(msg.sender, ctype)
        return cached
    props = Properties(PacketTypes.PUBLISH)
    _label(props, ctype)
    if msg.response_topic:
        props.ResponseTopic = msg.response_topic
    if msg.correlation is not None:
        props.CorrelationData = msg.correlation
    if msg.payload_format is not None:  # as given (a replay restores the recorded one)
        props.PayloadFormatIndicator = msg.payload_format
    if msg.sender:
        props.UserProperty = ("sender", msg.sender)
    if msg.user_properties:
        props.UserProperty = list(msg.user_properties)
    return props


def will_properties(content_type: str | None, payload: bytes) -> Properties | None:
    """The will's Content Type (and format indicator), like any publish's."""
    ctype = content_type or sniff(payload)
    if not ctype:
        return None
    props = Properties(PacketTypes.WILLMESSAGE)
    _label(props, ctype)
    return props


class FastClient(paho.Client):
    """paho Client whose QoS 0/1 PUBLISH packets go to ``on_publish_packet`` (MQTT 5 only)."""

    on_publish_packet: Callable[[Publish], None]

    def _handle_publish(self) -> paho.MQTTErrorCode:
        header = self._in_packet["command"]
        if (header & 0x06) >> 1 == 2:
            return super()._handle_publish()
        try:
            pub = decode_publish(header, self._in_packet["packet"])
        except (IndexError, UnicodeDecodeError) as exc:
            raise MalformedPacket(f"bad PUBLISH packet: {exc}") from exc
        self.on_publish_packet(pub)
        if pub.qos == 1 and not self._manual_ack:
            return self._send_puback(pub.mid)
        return paho.MQTT_ERR_SUCCESS
