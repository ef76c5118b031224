"""Decoding with precise errors, and the one lenient decoder for hand-written input.

Agents decode their own traffic strictly (:func:`decode_as`). What people and other languages
send may also be JSON: :func:`decode_lenient` reads skill commands and fault specs (numbers
written as strings pass too), :func:`parse_instruction` instructions (plain text too).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgspec

from robobus.schemas.errors import DecodeError
from robobus.schemas.messages import Instruction

T = TypeVar("T")

_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}


def decode_as(payload: bytes, type_: type[T], topic: str = "?") -> T:
    """Decode msgpack ``payload`` as ``type_``; raise DecodeError naming what was wrong."""
    if type_ is Instruction:
        return parse_instruction(payload, topic)  # type: ignore[return-value]
    dec: msgspec.msgpack.Decoder[T] | None = _decoders.get(type_)
    if dec is None:
        dec = _decoders[type_] = msgspec.msgpack.Decoder(type_)
    try:
        return dec.decode(payload)
    except msgspec.ValidationError as exc:
        raise DecodeError(topic, f"schema violation for {type_.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise DecodeError(topic, f"malformed msgpack: {exc}") from exc
    except RecursionError as exc:  # a few KiB of nested arrays must not kill the receiver
        raise DecodeError(topic, f"nesting too deep: {exc}") from exc


def encode(msg: Any) -> bytes:
    """Encode a struct (or plain data) as msgpack."""
    return msgspec.msgpack.encode(msg)


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
    """Plain data as ``type_``; unless ``strict``, ``"3"`` passes for 3 (JSON clients)."""
    try:
        return msgspec.convert(raw, type_, strict=strict)
    except msgspec.ValidationError as exc:
        raise DecodeError(topic, f"schema violation for {type_.__name__}: {exc}") from exc


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
