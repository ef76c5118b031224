"""Decoding with precise errors, plus the lenient instruction intake (text, JSON, msgpack)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgspec

from robobus.schemas.errors import DecodeError
from robobus.schemas.messages import Instruction

T = TypeVar("T")

_decoders: dict[type, msgspec.msgpack.Decoder] = {}


def decode_as(payload: bytes, type_: type[T], topic: str = "?") -> T:
    """Decode msgpack ``payload`` as ``type_``; raise DecodeError naming what was wrong."""
    if type_ is Instruction:
        return parse_instruction(payload, topic)  # type: ignore[return-value]
    dec = _decoders.get(type_)
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


_instruction = msgspec.msgpack.Decoder(Instruction)
_MAX_INSTRUCTION_CHARS = 4096


def parse_instruction(payload: bytes, topic: str = "instructions") -> Instruction:
    """Accept UTF-8 plain text, a JSON object, or the same object in msgpack."""
    inst = _try_structured(payload, topic)
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


def _try_structured(payload: bytes, topic: str) -> Instruction | None:
    stripped = payload.lstrip()
    if stripped[:1] == b"{":
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None  # text that merely starts with a brace
        except RecursionError as exc:
            raise DecodeError(topic, "instruction JSON nested too deep") from exc
        try:
            return msgspec.convert(obj, Instruction)
        except msgspec.ValidationError as exc:
            raise DecodeError(topic, f"schema violation for Instruction: {exc}") from exc
    if payload[:1] and (0x80 <= payload[0] <= 0x8F or payload[0] in (0xDE, 0xDF)):
        try:
            return _instruction.decode(payload)
        except msgspec.ValidationError as exc:
            raise DecodeError(topic, f"schema violation for Instruction: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(topic, f"malformed msgpack instruction: {exc}") from exc
        except RecursionError as exc:
            raise DecodeError(topic, "msgpack instruction nested too deep") from exc
    return None
