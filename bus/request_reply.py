"""Request/response the MQTT 5 way: a response topic (this client's inbox) plus correlation data."""

from __future__ import annotations

import asyncio
import secrets

from robobus.bus.core import BusCore
from robobus.bus.errors import RequestTimeout
from robobus.bus.message import Message
from robobus.bus.options import Payload


def _expire(reply: asyncio.Future[Message], exc: BaseException) -> None:
    if not reply.done():
        reply.set_exception(exc)


class Requests(BusCore):
    """Requests and replies of a :class:`robobus.bus.api.Bus`."""

    async def request(
        self, topic: str, payload: Payload, *, timeout: float | None = None, qos: int = 0
    ) -> Message:
        """Publish a request and wait for the one reply (response topic + correlation data)."""
        if not self._inbox_live:
            await self._ensure_inbox()
        corr = secrets.token_hex(8).encode()  # printable: `mosquitto_sub -F %J` shows it as text
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Message] = loop.create_future()
        self._pending[corr] = reply
        limit = timeout if timeout is not None else self.options.request_timeout
        # A loop timer rather than a timeout scope: on a ~500 µs round trip, entering and
        # leaving an anyio scope and event costs a measurable share.
        timer = loop.call_later(limit, _expire, reply, RequestTimeout(topic, limit))
        try:
            await self.publish(topic, payload, qos=qos, response_topic=self._inbox + "/r",
                               correlation=corr)
            return await reply
        finally:
            timer.cancel()
            self._pending.pop(corr, None)

    async def reply(self, request: Message, payload: Payload) -> None:
        """Answer ``request`` on its response topic, echoing its correlation data."""
        if not request.response_topic:
            raise ValueError(f"message on {request.topic!r} has no response topic")
        await self.publish(request.response_topic, payload, correlation=request.correlation)

    async def _ensure_inbox(self) -> None:
        async with self._inbox_lock:
            if not self._inbox_live:
                await self._transport.subscribe(self._inbox + "/#", 0)
                self._inbox_live = True

    def _resolve(self, msg: Message) -> None:
        reply = self._pending.get(msg.correlation or b"")
        if reply is not None and not reply.done():
            reply.set_result(msg)

