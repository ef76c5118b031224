"""Decoding skill commands and fault specs from msgpack or JSON (for external clients)."""

from __future__ import annotations

import json
import secrets
from typing import Any, TypeVar

import msgspec

from robobus.bus.errors import DecodeError
from robobus.schemas.messages import SkillCommand
from robobus.skills.errors import SkillRejected

T = TypeVar("T")


def decode_map(payload: bytes, topic: str) -> dict[str, Any]:
    """A msgpack or JSON object; raise ``DecodeError`` saying which it was not."""
    try:
        if payload.lstrip()[:1] == b"{":
            obj = json.loads(payload)
        else:
            obj = msgspec.msgpack.decode(payload)
    except (ValueError, msgspec.DecodeError) as exc:
        raise DecodeError(topic, f"payload is neither a msgpack nor a JSON object: {exc}") from exc
    except RecursionError as exc:  # deeply nested input must not end the command loop
        raise DecodeError(topic, "payload nested too deep") from exc
    if not isinstance(obj, dict):
        raise DecodeError(topic, f"expected an object, got {type(obj).__name__}")
    return obj


def parse_command(payload: bytes, topic: str, robot: str, skill: str) -> SkillCommand:
    """Decode a command sent to ``robot``'s ``skill`` topic.

    Lenient where it is safe for hand-written commands: ``skill`` defaults to the topic's,
    and a missing ``command_id`` is generated. Strict where it matters: a ``skill`` or
    ``robot`` field that contradicts the topic is refused.
    """
    raw = decode_map(payload, topic)
    if raw.get("robot", robot) != robot:
        raise SkillRejected(f"command for robot {raw['robot']!r} sent to {robot!r}", "wrong_robot")
    raw.setdefault("skill", skill)
    if raw["skill"] != skill and raw.get("action", "run") == "run":
        raise SkillRejected(f"command for skill {raw['skill']!r} on the {skill!r} topic",
                            "skill_mismatch")
    raw.setdefault("command_id", f"anon-{secrets.token_hex(4)}")
    return convert(raw, SkillCommand, topic)


def convert(raw: Any, type_: type[T], topic: str) -> T:
    try:
        return msgspec.convert(raw, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise DecodeError(topic, f"schema violation for {type_.__name__}: {exc}") from exc


def command_id_of(payload: bytes) -> str:
    """Best-effort command id of an undecodable command, for the rejection feedback."""
    try:
        cid = decode_map(payload, "?").get("command_id")
    except DecodeError:
        return ""
    return cid if isinstance(cid, str) else ""
