"""Encodings on the wire, decoding with precise errors, and the lenient decoder for hand-written input.

Two encodings travel on the bus (issue 14): msgpack (the default) and JSON. Every receiver takes
either on every topic: MQTT 5's Content Type says which where the publisher set it; otherwise the
payload does, and the two cannot be confused: a JSON object starts with ``{`` (or whitespace), a
msgpack map with 0x80-0x8f, 0xde or 0xdf. The msgpack decoder runs first, so reading msgpack
costs nothing more than before; JSON is tried only once it failed.

Integer fields take integral floats (a JavaScript client's ``Date.now() * 1e6``, or an int64
that a msgpack-JS encoder wrote as float64): the value is the float's, exactly.

Agents decode their own traffic strictly (:func:`decode_as`). What people and other languages
send may also be JSON: :func:`decode_lenient` reads skill commands and fault specs (numbers
written as strings pass too), :func:`parse_instruction` instructions (plain text too).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from robobus.schemas.errors import DecodeError
from robobus.schemas.messages import Instruction

T = TypeVar("T")

#: MQTT 5 Content Type of each encoding (JSON also sets Payload Format Indicator 1: UTF-8)
MSGPACK = "application/msgpack"
JSON = "application/json"
#: codec name (``?codec=`` on a bus URL) -> content type
CODECS = {"msgpack": MSGPACK, "json": JSON}
_JSON_START = frozenset(b"{ \t\r\n")
_INT64 = 2**63

_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}
_json_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_encoders: dict[str, Callable[[Any], bytes]] = {
    MSGPACK: msgspec.msgpack.Encoder().encode, JSON: msgspec.json.Encoder().encode}


def encoder(codec: str) -> tuple[Callable[[Any], bytes], str]:
    """The encode function and content type of ``codec`` (``msgpack`` or ``json``)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    return _encoders[CODECS[codec]], CODECS[codec]


def sniff(payload: bytes) -> str | None:
    """The content type a payload shows: a msgpack map, a JSON object, or None (neither)."""
    if not payload:
        return None
    first = payload[0]
    if 0x80 <= first <= 0x8F or first in (0xDE, 0xDF):
        return MSGPACK
    if first in _JSON_START and payload.lstrip()[:1] == b"{":
        return JSON
    return None


def decode_as(payload: bytes, type_: type[T], topic: str = "?", content_type: str | None = None) -> T:
    """Decode ``payload`` (msgpack or JSON, see the module) as ``type_``; raise DecodeError
    naming what was wrong."""
    if type_ is Instruction:
        return parse_instruction(payload, topic)  # type: ignore[return-value]
    if content_type == JSON:
        return _decode_json(payload, type_, topic)
    dec: msgspec.msgpack.Decoder[T] | None = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    try:
        return dec.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _not_plain_msgpack(payload, type_, topic, content_type, exc)
    except RecursionError as exc:  # a few KiB of nested arrays must not kill the receiver
        raise DecodeError(topic, f"nested too deep: {exc}") from exc


def _not_plain_msgpack(payload: bytes, type_: type[T], topic: str, content_type: str | None,
                       exc: msgspec.MsgspecError) -> T:
    """The slow path: JSON, integral floats for ints, or the honest error."""
    seen = sniff(payload)
    if seen == JSON and content_type != MSGPACK:
        return _decode_json(payload, type_, topic)
    if seen != MSGPACK:
        first = f"0x{payload[0]:02x}" if payload else "nothing (empty payload)"
        said = f" (declared {content_type})" if content_type else ""
        raise DecodeError(topic, f"malformed payload{said}: not msgpack (a map) and not JSON "
                                 f"(an object); it starts with {first}") from exc
    if isinstance(exc, msgspec.ValidationError):
        return _integral(lambda: msgspec.msgpack.decode(payload), type_, topic, exc)
    raise DecodeError(topic, f"malformed msgpack: {exc}") from exc


def _decode_json(payload: bytes, type_: type[T], topic: str) -> T:
    dec: msgspec.json.Decoder[T] | None = _json_decoders.get(type_)
    if dec is None:
        dec = _json_decoders[type_] = msgspec.json.Decoder(type_)
    try:
        return dec.decode(payload)
    except msgspec.ValidationError as exc:
        return _integral(lambda: msgspec.json.decode(payload), type_, topic, exc)
    except msgspec.DecodeError as exc:
        raise DecodeError(topic, f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise DecodeError(topic, f"nested too deep: {exc}") from exc


def _integral(raw: Callable[[], Any], type_: type[T], topic: str,
              exc: msgspec.ValidationError) -> T:
    """``raw()`` as ``type_`` with integral floats read as ints; else the first error.

    ``raw`` decodes untyped, only when a float is to blame: a typed decode stops at the first
    bad field, so the rest may be truncated or nested too deep (found by tests/fuzz)."""
    if "got `float`" not in str(exc):
        raise DecodeError(topic, f"schema violation for {type_.__name__}: {exc}") from exc
    try:
        return msgspec.convert(_ints(raw()), type_)
    except (msgspec.MsgspecError, RecursionError):
        raise DecodeError(topic, f"schema violation for {type_.__name__}: {exc}") from exc


def _ints(raw: Any) -> Any:
    """``raw`` with every finite integral float within int64 as an int (exact: the float's value)."""
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() and -_INT64 <= raw < _INT64 else raw
    if isinstance(raw, dict):
        return {k: _ints(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_ints(v) for v in raw]
    return raw


def encode(msg: Any, codec: str = "msgpack") -> bytes:
    """Encode a struct (or plain data) as msgpack, or as JSON with ``codec="json"``."""
    return encoder(codec)[0](msg)


def decode_object(payload: bytes, topic: str = "?") -> dict[str, Any]:
    """A JSON object (a payload starting with ``{``) or a msgpack map; raise DecodeError."""
    try:
        obj = json.loads(payload) if payload.lstrip()[:1] == b"{" \
            else msgspec.msgpack.decode(payload)
    except (ValueError, msgspec.DecodeError) as exc:
        raise DecodeError(topic, f"payload is neither a msgpack nor a JSON object: {exc}") from exc
    except RecursionError as exc:  # deeply nested input must not end the receiving loop
        raise DecodeError(topic, "payload nested too deep") from exc
    if not isinstance(obj, dict):
        raise DecodeError(topic, f"expected an object, got {type(obj).__name__}")
    return obj


def convert(raw: Any, type_: type[T], topic: str = "?", *, strict: bool = False) -> T:
    """Plain data as ``type_``; unless ``strict``, ``"3"`` passes for 3 (JSON clients).
    Integral floats pass for ints either way (see the module)."""
    try:
        return msgspec.convert(raw, type_, strict=strict)
    except msgspec.ValidationError as exc:
        return _integral(lambda: raw, type_, topic, exc)
    except UnicodeError as exc:  # a lone surrogate in a string read as a number (tests/fuzz)
        raise DecodeError(topic, f"invalid text for {type_.__name__}: {exc}") from exc


def decode_lenient(payload: bytes, type_: type[T], topic: str = "?") -> T:
    """A JSON object or msgpack map as ``type_``, numbers and booleans written as strings too."""
    return convert(decode_object(payload, topic), type_, topic)


_MAX_INSTRUCTION_CHARS = 4096


def parse_instruction(payload: bytes, topic: str = "instructions") -> Instruction:
    """Accept UTF-8 plain text, a JSON object, or the same object in msgpack."""
    inst = _structured_instruction(payload, topic)
    if inst is None:
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DecodeError(topic, "instruction is neither msgpack, JSON nor UTF-8 text") from exc
        inst = Instruction(text=text)
    if not inst.text.strip():
        raise DecodeError(topic, "instruction text is empty")
    if len(inst.text) > _MAX_INSTRUCTION_CHARS:
        raise DecodeError(topic, f"instruction longer than {_MAX_INSTRUCTION_CHARS} characters")
    return inst


def _structured_instruction(payload: bytes, topic: str) -> Instruction | None:
    """The instruction object of a JSON or msgpack payload; None for plain text."""
    json_like = payload.lstrip()[:1] == b"{"
    msgpack_map = bool(payload) and (0x80 <= payload[0] <= 0x8F or payload[0] in (0xDE, 0xDF))
    if not (json_like or msgpack_map):
        return None
    try:
        obj = decode_object(payload, topic)
    except DecodeError as exc:
        if json_like and not isinstance(exc.__cause__, RecursionError):
            return None  # text that merely starts with a brace
        raise
    return convert(obj, Instruction, topic, strict=True)
