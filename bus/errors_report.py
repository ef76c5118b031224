"""Refused inputs reported on ``{prefix}/errors`` (and to the sender's reply topic), rate limited
per topic so that a flood cannot amplify; what the limiter holds back is counted and told (issue 13)."""

from __future__ import annotations

import functools

from robobus.bus.core import BusCore
from robobus.bus.errors import BusError
from robobus.bus.limits import tell_suppressed
from robobus.bus.message import Message
from robobus.bus.reply import refuse_reply_topic


class ErrorReports(BusCore):
    """The error channel of a :class:`robobus.bus.api.Bus`."""

    async def report_error(
        self, topic: str, reason: str, code: str = "invalid", payload: bytes = b"", *,
        about: Message | None = None, task_id: str | None = None, sender: str | None = None,
        reply: tuple[str, bytes | None] | None = None,
    ) -> None:
        """Log a rejected input and publish it on ``{prefix}/errors``.

        ``about`` is the refused message: the report names its sender and, when it asked for
        a reply (MQTT 5 Response Topic, ZeroMQ reply inbox), also goes there with its
        correlation data echoed; ``reply`` names a reply topic the payload asked for instead.
        """
        from robobus.schemas.messages import ErrorReport

        self.log.warning("input_rejected", topic=topic, code=code, reason=reason, task=task_id)
        if not self.options.report_errors or topic == self.topic("errors"):
            return
        if about is not None:
            sender = sender or about.sender
            if reply is None and about.response_topic:
                reply = (about.response_topic, about.correlation)
        report = ErrorReport(source=self.name, topic=topic, code=code, reason=reason,
                             excerpt=bytes(payload[:64]).hex(), sender=sender, task_id=task_id)
        try:
            await self.publish(self.topic("errors"), report)
            if reply is not None and refuse_reply_topic(reply[0], self.options.prefix) is None:
                await self.publish(reply[0], report, correlation=reply[1])
        except BusError as exc:  # the error channel must never take the agent down
            self.log.error("error_report_failed", error=repr(exc))

    def report_error_soon(
        self, topic: str, reason: str, code: str, payload: bytes, *,
        about: Message | None = None, task_id: str | None = None, sender: str | None = None,
        reply: tuple[str, bytes | None] | None = None,
    ) -> None:
        """Schedule :meth:`report_error` from synchronous code (at most 20/s per topic)."""
        if not self._error_buckets.allow(topic):  # never hidden: the count is told (issue 13)
            if self._error_buckets.suppressed.get(topic) == 1 and self._tg is not None:
                say = functools.partial(self.report_error, topic, code="suppressed")
                self._tg.start_soon(tell_suppressed, self._error_buckets, topic,
                                    lambda n: say(f"{n} reports on this topic suppressed"))
            return
        if untold := self._error_buckets.take_suppressed(topic):
            reason = f"{reason} ({untold} earlier reports on this topic suppressed)"
        if self._tg is not None:
            self._tg.start_soon(functools.partial(
                self.report_error, topic, reason, code, payload, about=about, task_id=task_id,
                sender=sender, reply=reply))

