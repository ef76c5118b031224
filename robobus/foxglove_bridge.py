"""The bus, live in Foxglove (issue 17, item 2): ``robobus foxglove``.

A Foxglove WebSocket server (the ``foxglove-sdk``'s, which speaks the Foxglove WebSocket protocol
and answers a client's bad requests with an error status) on which:

* every topic of the fleet becomes a JSON channel, advertised the first time it carries a message
  (retained ones at once), with the Foxglove-readable JSON Schema and payload of the MCAP export
  (:mod:`robobus.memory_store.foxglove`), so a live view and a recorded one look the same;
* ``{prefix}/foxglove/scene`` (``foxglove.SceneUpdate``) draws places, objects and robots for the
  3D panel, and ``{prefix}/foxglove/tf`` (``foxglove.FrameTransform``) places each robot's frame
  in ``world``, from its ``RobotState`` pose.

The scene is rebuilt from the memory agent's world (queried at start and after world events) and
the latest robot states, at most :attr:`BridgeOptions.scene_hz` times a second.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import foxglove
import msgspec
import structlog
from foxglove.channels import FrameTransformChannel, SceneUpdateChannel
from foxglove.messages import (
    Color,
    CubePrimitive,
    FrameTransform,
    Pose,
    Quaternion,
    SceneEntity,
    SceneUpdate,
    TextPrimitive,
    Timestamp,
    Vector3,
)
from foxglove.websocket import ChannelView, Client, ServerListener

from robobus.bus import Bus, BusError, DecodeError, Message
from robobus.memory_store.foxglove import foxglove_payload, foxglove_schema
from robobus.schemas.codec import decode_as
from robobus.schemas.contract import is_retained_topic, message_type, prefix_of
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import Alive, RobotState
from robobus.schemas.topics import Topics
from robobus.schemas.world import World, WorldConflict, WorldEvent, WorldSnapshot

log = structlog.get_logger("robobus.foxglove")
WORLD_FRAME = "world"
_PLACE = Color(r=0.55, g=0.55, b=0.6, a=0.6)
_OBJECT = Color(r=0.95, g=0.6, b=0.1, a=1.0)
_ROBOT = Color(r=0.2, g=0.5, b=0.95, a=1.0)
_OFFLINE = Color(r=0.4, g=0.4, b=0.4, a=0.5)


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    """Where the WebSocket server listens and how often the scene is redrawn."""

    host: str = "127.0.0.1"
    port: int = 8765
    scene_hz: float = 5.0
    query_timeout_s: float = 3.0


@dataclass
class _Scene:
    world: WorldSnapshot | None = None
    states: dict[str, RobotState] = field(default_factory=dict)
    online: dict[str, bool] = field(default_factory=dict)
    changed: bool = True
    world_stale: bool = True


class FoxgloveBridge:
    """Forwards every message of one fleet to Foxglove channels and keeps the 3D scene."""

    def __init__(self, bus: Bus, options: BridgeOptions | None = None) -> None:
        self.bus, self.topics = bus, Topics(bus.options.prefix)
        self.options = options or BridgeOptions()
        self.context = foxglove.Context()
        self.channels: dict[str, foxglove.Channel] = {}
        self.scene_channel = SceneUpdateChannel(self.topics.prefix + "/foxglove/scene",
                                                context=self.context)
        self.tf_channel = FrameTransformChannel(self.topics.prefix + "/foxglove/tf",
                                                context=self.context)
        self.scene = _Scene()
        #: the latest payload of each retained topic, sent again when a client subscribes
        self.latched: dict[str, bytes] = {}

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started`` gets the port the server listens on."""
        server = foxglove.start_server(name=f"robobus {self.topics.prefix}", host=self.options.host,
                                       port=self.options.port, context=self.context,
                                       server_listener=_Latch(self))
        try:
            async with self.bus.subscribe(self.topics.prefix + "/#", maxsize=100_000) as sub, \
                    anyio.create_task_group() as tg:
                tg.start_soon(self._redraw, name="foxglove:scene")
                log.info("foxglove_listening", url=f"ws://{self.options.host}:{server.port}")
                task_status.started(server.port)
                async for msg in sub:
                    self.forward(msg)
        finally:
            server.stop()

    def forward(self, msg: Message) -> None:
        """Log ``msg`` on its topic's channel; note what the scene needs from it."""
        channel = self.channels.get(msg.topic)
        if channel is None:
            channel = self.channels[msg.topic] = self._channel(msg.topic)
        data = foxglove_payload(msg.payload)
        channel.log(data, log_time=time.time_ns())
        if msg.retain or is_retained_topic(msg.topic):
            self.latched[msg.topic] = data
        if msg.topic == self.topics.world_events or msg.topic == self.topics.scene:
            self.scene.world_stale = True
        elif self.topics.robot_of(msg.topic) and msg.topic.endswith("/state"):
            self._state(msg)
        elif self.topics.robot_of(msg.topic) and msg.topic.endswith("/alive"):
            self._alive(msg)

    def _channel(self, topic: str) -> foxglove.Channel:
        type_ = message_type(topic, self.topics.prefix)
        schema = foxglove_schema(type_)
        schema = {**schema, "title": f"robobus.{type_.__name__}" if type_ else "robobus.Payload"}
        return foxglove.Channel(topic, schema=schema, context=self.context)

    def _state(self, msg: Message) -> None:
        try:
            state = decode_as(msg.payload, RobotState, msg.topic, msg.content_type)
        except DecodeError:
            return  # still forwarded as it came; its owner reports it
        self.scene.states[state.robot] = state
        self.scene.changed = True
        self.tf_channel.log(transform(state), log_time=time.time_ns())

    def _alive(self, msg: Message) -> None:
        try:
            alive = decode_as(msg.payload, Alive, msg.topic, msg.content_type)
        except DecodeError:
            return
        self.scene.online[alive.robot] = alive.online
        self.scene.changed = True

    async def _redraw(self) -> None:
        while True:
            if self.scene.world_stale:
                self.scene.world_stale = False
                await self._load_world()
            if self.scene.changed:
                self.scene.changed = False
                self.scene_channel.log(scene_update(self.scene.world, self.scene.states,
                                                    self.scene.online), log_time=time.time_ns())
            await anyio.sleep(1 / self.options.scene_hz)

    async def _load_world(self) -> None:
        try:
            msg = await self.bus.request(self.topics.memory_query, MemoryQuery(kind="world"),
                                         timeout=self.options.query_timeout_s)
            reply = decode_as(msg.payload, QueryReply, msg.topic, msg.content_type)
            if reply.ok:
                self.scene.world = msgspec.convert(reply.result, WorldSnapshot)
                self.scene.changed = True
                return
            log.warning("foxglove_world_refused", error=reply.error)
        except (BusError, msgspec.ValidationError) as exc:
            log.warning("foxglove_world_unavailable", error=str(exc))
        self.scene.world_stale = True  # try again at the next redraw


class _Latch(ServerListener):
    """Retained topics (registrations, presence, the scene) change rarely, and Foxglove sends a
    subscriber only what is logged after it subscribes: on a subscription, their latest payload
    (and the 3D scene) is logged again, as a ROS latched topic would be. The SDK calls this from
    its own thread: it reads the bridge's dict and sets a flag; ``Channel.log`` is thread-safe."""

    def __init__(self, bridge: FoxgloveBridge) -> None:
        self.bridge = bridge

    def on_subscribe(self, client: Client, channel: ChannelView) -> None:
        if channel.topic == self.bridge.scene_channel.topic():
            self.bridge.scene.changed = True
            return
        data = self.bridge.latched.get(channel.topic)
        target = self.bridge.channels.get(channel.topic)
        if data is not None and target is not None:
            target.log(data, log_time=time.time_ns())


def _stamp(ts_ns: int) -> Timestamp:
    return Timestamp(ts_ns // 1_000_000_000, ts_ns % 1_000_000_000)


def _yaw(theta: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(theta / 2), w=math.cos(theta / 2))


def _pose(x: float, y: float, z: float = 0.0, theta: float = 0.0) -> Pose:
    return Pose(position=Vector3(x=x, y=y, z=z), orientation=_yaw(theta))


def transform(state: RobotState) -> FrameTransform:
    """The robot's frame in ``world``, from its pose (x, y, heading theta)."""
    return FrameTransform(timestamp=_stamp(state.ts_ns), parent_frame_id=WORLD_FRAME,
                          child_frame_id=state.robot,
                          translation=Vector3(x=state.pose.x, y=state.pose.y, z=0.0),
                          rotation=_yaw(state.pose.theta))


def _entity(id_: str, x: float, y: float, size: tuple[float, float, float], color: Color,
            label: str, theta: float = 0.0) -> SceneEntity:
    cube = CubePrimitive(pose=_pose(x, y, size[2] / 2, theta),
                         size=Vector3(x=size[0], y=size[1], z=size[2]), color=color)
    text = TextPrimitive(pose=_pose(x, y, size[2] + 0.15), billboard=True, font_size=14.0,
                         scale_invariant=True, color=Color(r=1.0, g=1.0, b=1.0, a=1.0), text=label)
    return SceneEntity(timestamp=_stamp(time.time_ns()), frame_id=WORLD_FRAME, id=id_,
                       cubes=[cube], texts=[text])


def scene_update(world: WorldSnapshot | None, states: dict[str, RobotState],
                 online: dict[str, bool] | None = None) -> SceneUpdate:
    """Places (flat slabs), objects (small boxes) and robots (boxes at their latest pose, grey
    when offline: ``online`` from their presence, else the world's), with entity ids
    ``place/NAME``, ``object/NAME`` and ``robot/NAME``."""
    entities: list[SceneEntity] = []
    places = world.places if world else {}
    for name, place in places.items():
        entities.append(_entity(f"place/{name}", *place.position, (0.8, 0.8, 0.05), _PLACE, name))
    for name, obj in (world.objects if world else {}).items():
        xy = _object_xy(world, obj.location, obj.position, states)
        if xy is not None:
            entities.append(_entity(f"object/{name}", *xy, (0.12, 0.12, 0.12), _OBJECT, name))
    robots: dict[str, Any] = dict(world.robots) if world else {}
    for name in sorted({*robots, *states}):
        st = states.get(name)
        x, y, theta = (st.pose.x, st.pose.y, st.pose.theta) if st else (*robots[name].position, 0.0)
        alive = (online or {}).get(name, robots[name].alive if name in robots else True)
        entities.append(_entity(f"robot/{name}", x, y, (0.5, 0.35, 0.6), _ROBOT if alive else _OFFLINE,
                                name, theta))
    return SceneUpdate(entities=entities)


def _object_xy(world: WorldSnapshot | None, location: str, position: tuple[float, float] | None,
               states: dict[str, RobotState]) -> tuple[float, float] | None:
    if location in states:  # held: drawn with its robot
        pose = states[location].pose
        return pose.x, pose.y
    if position is not None:
        return position
    if world is not None and location in world.places:
        return world.places[location].position
    if world is not None and location in world.robots:
        return world.robots[location].position
    if world is not None and location in world.objects:  # in a container
        inner = world.objects[location]
        return _object_xy(world, inner.location, inner.position, states)
    return None


#: a derived MCAP message: (topic, schema name, schema encoding, schema data, message encoding, data)
Derived = tuple[str, str, str, bytes, str, bytes]


class RecordedScene:
    """The bridge's scene and transform channels for a recorded log (``robobus export --mcap``):
    call it with each event in order; it returns the messages to add beside it. The world comes
    from the recorded ``world/scene`` and ``world/events``, robots from ``state`` and ``alive``;
    a scene at most every ``period_ns`` of log time, when something changed."""

    def __init__(self, period_ns: int = 200_000_000) -> None:
        self.period_ns, self.last_ns = period_ns, -period_ns
        self.world: World | None = None
        self.scene = _Scene(changed=False, world_stale=False)

    def __call__(self, topic: str, payload: bytes, ts_ns: int) -> list[Derived]:
        prefix, type_ = prefix_of(topic), message_type(topic)
        if prefix is None and topic.endswith("world/scene"):
            prefix = topic[:-len("world/scene")].rstrip("/")
        if prefix is None:
            return []
        out = self._apply(prefix, topic, payload, type_)
        if self.scene.changed and ts_ns - self.last_ns >= self.period_ns:
            self.scene.changed, self.last_ns = False, ts_ns
            self.scene.world = self.world.snapshot() if self.world else None
            out.append(_derived(f"{prefix}/foxglove/scene", scene_update(
                self.scene.world, self.scene.states, self.scene.online)))
        return out

    def _apply(self, prefix: str, topic: str, payload: bytes,
               type_: type[msgspec.Struct] | None) -> list[Derived]:
        try:
            if topic.endswith("world/scene"):
                self.world = World.from_scene(msgspec.msgpack.decode(payload) if payload[:1] != b"{"
                                              else msgspec.json.decode(payload))
            elif type_ is WorldEvent and self.world is not None:
                self.world.apply(decode_as(payload, WorldEvent).change)
            elif type_ is Alive:
                alive = decode_as(payload, Alive)
                self.scene.online[alive.robot] = alive.online
            elif type_ is RobotState:
                state = decode_as(payload, RobotState)
                self.scene.states[state.robot] = state
                self.scene.changed = True
                return [_derived(f"{prefix}/foxglove/tf", transform(state))]
            else:
                return []
        except (DecodeError, msgspec.DecodeError, msgspec.ValidationError, WorldConflict,
                AttributeError, KeyError, TypeError, ValueError):
            return []  # the JSON channel still carries it as it came
        self.scene.changed = True
        return []


def _derived(topic: str, message: SceneUpdate | FrameTransform) -> Derived:
    schema = message.get_schema()
    return (topic, schema.name, schema.encoding, schema.data, "protobuf", message.encode())


async def serve(bus: Bus, options: BridgeOptions | None = None) -> None:
    """Run a :class:`FoxgloveBridge` on ``bus`` until cancelled."""
    await FoxgloveBridge(bus, options).run()
