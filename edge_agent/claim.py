"""One live edge per robot name: a second edge for a robot that is online is refused.

Checked at start-up, before the edge connects with its last will: a plain connection reads the
robot's retained ``alive``, and ``online: true`` (a live process, since a dead one's last will
says ``offline``) refuses the start. Only ``online`` is read, so the presence message may grow.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import anyio

from robobus.bus.api import Bus, BusOptions
from robobus.edge_agent.errors import EdgeError
from robobus.schemas.codec import decode_object
from robobus.schemas.errors import DecodeError
from robobus.schemas.topics import Topics

#: How long to wait for a retained alive on MQTT (it follows the SUBACK); the ZeroMQ hub
#: delivers retained values before the subscription returns.
MQTT_RETAINED_WAIT_S = 1.0


class RobotNameTaken(EdgeError):
    """Another live edge agent already serves this robot name."""

    def __init__(self, robot: str, url: str) -> None:
        super().__init__(f"robot {robot!r} is already online on {url} (another edge agent "
                         "serves it); stop that one, choose another --name, or pass --replace")
        self.robot = robot


async def ensure_name_free(url: str, robot: str, prefix: str = "robobus") -> None:
    """Raise :class:`RobotNameTaken` if ``robot``'s retained alive says it is online."""
    wait = MQTT_RETAINED_WAIT_S if urlsplit(url).scheme.startswith("mqtt") else 0.0
    async with Bus.connect(url, name=f"{robot}-claim", options=BusOptions(prefix=prefix)) as bus, \
            bus.subscribe(Topics(prefix).alive(robot)) as sub:
        msg = sub.get_nowait()
        if msg is None and wait:
            with anyio.move_on_after(wait):
                msg = await sub.get()
        if msg is not None and says_online(msg.payload):
            raise RobotNameTaken(robot, url)


def says_online(payload: bytes) -> bool:
    """Whether a retained ``alive`` payload says online (anything undecodable: no)."""
    try:
        data = decode_object(payload)  # msgpack or JSON
    except DecodeError:
        return False
    return isinstance(data, dict) and data.get("online") is True
