"""Typed subscriptions: decode each message into the subscription's type; refuse what does not fit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from robobus.bus.errors import DecodeError
from robobus.bus.errors_report import ErrorReports
from robobus.bus.message import Message


def decoder(bus: ErrorReports, type_: type[Any],
            reports: bool | Callable[[str], bool]) -> Callable[[Message], Message | None]:
    """A decode step for :class:`~robobus.bus.subscription.Subscription`: ``msg.data`` set, or
    None for a message that does not decode (reported on ``bus``'s error channel if ``reports``
    says so for its topic, else logged at debug level)."""
    from robobus.schemas.codec import decode_as

    def decode(msg: Message) -> Message | None:
        try:
            data = decode_as(msg.payload, type_, msg.topic, msg.content_type)
            return dataclasses.replace(msg, data=data)
        except DecodeError as exc:
            if reports is True or (reports is not False and reports(msg.topic)):
                bus.report_error_soon(msg.topic, exc.reason, "decode", msg.payload, about=msg)
            else:
                bus.log.debug("input_skipped", topic=msg.topic, reason=exc.reason)
            return None

    return decode
