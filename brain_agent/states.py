"""Robot topics and robot states at the brain's intake (issue 16, items 2 and 7).

With a thousand robots at 10 Hz a brain reads 10,000 states a second, and a group's brain
receives every robot's (no MQTT or ZeroMQ filter selects a name pattern). So:

* which robot a topic names, and whether this brain leads it, is decided once per topic
  (:class:`RobotTopics`), not by splitting the topic and matching the group's patterns on
  every message;
* states arrive untyped and another group's robot's state is dropped by its topic, before it
  is decoded (:class:`StateIntake`); the rest are decoded and checked as a typed subscription
  would, and handed to the brain's handler without a coroutine per state.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable

from robobus.brain_agent.groups import RobotGroup
from robobus.brain_agent.guard import Guard
from robobus.bus import Bus, Message
from robobus.bus.typed import decoder
from robobus.schemas.codec import decode_as
from robobus.schemas.errors import DecodeError
from robobus.schemas.messages import RobotState
from robobus.schemas.topics import Topics

#: topics remembered (four per robot: registration, alive, state, feedback); emptied past it
TOPIC_LIMIT = 65_536


class RobotTopics:
    """``topic -> (robot, led)``: the ``{robot}`` level of a robot topic (None for another
    topic) and whether this brain leads that robot (always, for a brain of the whole fleet)."""

    def __init__(self, topics: Topics, group: RobotGroup | None) -> None:
        self.topics, self.group = topics, group
        self._seen: dict[str, tuple[str | None, bool]] = {}

    def __call__(self, topic: str) -> tuple[str | None, bool]:
        hit = self._seen.get(topic)
        if hit is None:
            if len(self._seen) >= TOPIC_LIMIT:
                self._seen.clear()
            robot, group = self.topics.robot_of(topic), self.group
            hit = self._seen[topic] = (robot, group is None or robot is None or group.has(robot))
        return hit

    def mismatch(self, msg: Message, named: str | None) -> str | None:
        """Why ``msg``'s payload (naming robot ``named``) may not travel on its topic, or None:
        a robot topic's payload must name that robot (as :meth:`Topics.robot_mismatch`)."""
        robot = self(msg.topic)[0]
        if robot is None or named is None or named == robot:
            return None
        return self.topics.robot_mismatch(msg.topic, named)


class StateIntake:
    """Serves an untyped subscription to ``P/robots/+/state`` with ``handler(state)``."""

    def __init__(self, bus: Bus, robots: RobotTopics, guard: Guard,
                 handler: Callable[[RobotState], None], reports: Callable[[str], bool]) -> None:
        self.bus, self.robots, self.guard, self.handler = bus, robots, guard, handler
        #: the typed subscription's decode step, for its report of a state that fails
        self._report = decoder(bus, RobotState, reports)

    async def serve(self, sub: AsyncIterable[Message], pattern: str) -> None:
        what = f"{self.handler.__name__} on {pattern}"
        robots, handler = self.robots, self.handler
        async for msg in sub:
            robot, led = robots(msg.topic)
            if not led:
                continue  # another group's robot: its brain reads it
            state = self._decode(msg)
            if state is None:
                continue
            if robot is not None and state.robot != robot:
                self.bus.report_error_soon(msg.topic, robots.mismatch(msg, state.robot) or "",
                                           "robot_mismatch", msg.payload)
                continue
            try:  # one state that the handler cannot take is reported; the next is served
                handler(state)
            except Exception as exc:  # noqa: BLE001 - reported on P/errors and counted
                self.guard.failed(what, msg.topic, exc, msg.payload)

    def _decode(self, msg: Message) -> RobotState | None:
        try:
            return decode_as(msg.payload, RobotState, msg.topic, msg.content_type)
        except DecodeError:
            self._report(msg)  # decodes it again, and reports it as a typed subscription does
            return None

