"""Decoding skill commands from msgpack or JSON (for external clients).

The lenient decoding itself is the contract's (:func:`robobus.schemas.codec.decode_lenient`);
this module adds what a command topic implies.
"""

from __future__ import annotations

import secrets

from robobus.bus.errors import DecodeError
from robobus.schemas.codec import convert, decode_object
from robobus.schemas.messages import SkillCommand
from robobus.skills.errors import SkillRejected


def parse_command(payload: bytes, topic: str, robot: str, skill: str) -> SkillCommand:
    """Decode a command sent to ``robot``'s ``skill`` topic.

    Lenient where it is safe for hand-written commands: ``skill`` defaults to the topic's,
    and a missing ``command_id`` is generated. Strict where it matters: a ``skill`` or
    ``robot`` field that contradicts the topic is refused.
    """
    raw = decode_object(payload, topic)
    if raw.get("robot", robot) != robot:
        raise SkillRejected(f"command for robot {raw['robot']!r} sent to {robot!r}", "wrong_robot")
    raw.setdefault("skill", skill)
    if raw["skill"] != skill and raw.get("action", "run") == "run":
        raise SkillRejected(f"command for skill {raw['skill']!r} on the {skill!r} topic",
                            "skill_mismatch")
    raw.setdefault("command_id", f"anon-{secrets.token_hex(4)}")
    return convert(raw, SkillCommand, topic)


def command_id_of(payload: bytes) -> str:
    """Best-effort command id of an undecodable command, for the rejection feedback."""
    try:
        cid = decode_object(payload, "?").get("command_id")
    except DecodeError:
        return ""
    return cid if isinstance(cid, str) else ""
