"""Reply topics a robobus agent answers on (MQTT 5 Response Topic, ZeroMQ reply inbox)."""

from __future__ import annotations

from robobus.bus.errors import TopicError
from robobus.bus.topics import validate_topic


def refuse_reply_topic(topic: str, prefix: str) -> str | None:
    """Why an agent must not answer on ``topic``, or None when it may.

    Reply topics are the requester's: a fleet topic is refused unless it is a reply inbox
    (``{prefix}/_inbox/...``, what :meth:`robobus.bus.Bus.request` uses), so a request cannot
    make an agent publish a status or a report onto a robot's command topic or a task's topic.
    """
    try:
        validate_topic(topic)
    except TopicError as exc:
        return str(exc)
    if topic.startswith("$"):
        return f"reply topic {topic[:64]!r} is a broker topic ($...)"
    if topic.startswith(prefix + "/") and not topic.startswith(f"{prefix}/_inbox/"):
        return (f"reply topic {topic[:64]!r} is a fleet topic: use one outside {prefix}/ "
                f"or a reply inbox under {prefix}/_inbox/")
    return None
