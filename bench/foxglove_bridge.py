"""What the Foxglove bridge costs per bus message (issue 17 item 2), in this process.

    python -m bench.foxglove_bridge [--messages 20000] [--robots 50]

Feeds ``RobotState`` messages of ``--robots`` robots to :meth:`FoxgloveBridge.forward` (its
channel lookup, the export's JSON payload rewrite, the SDK's channel log, the robot's
``FrameTransform``) with the SDK's WebSocket server listening and no client, then times a scene
rebuild (``SceneUpdate`` of every robot and 10 places, encoded) and prints both. The first
message of each robot creates its channel, so more robots cost more per message. No bus traffic:
a ``memory://`` bus only gives the bridge its prefix.
"""

from __future__ import annotations

import argparse
import time

import anyio
import foxglove
import msgspec

from robobus.bus import Bus, BusOptions, Message
from robobus.foxglove_bridge import BridgeOptions, FoxgloveBridge, scene_update
from robobus.schemas.messages import Pose, RobotState
from robobus.schemas.topics import Topics
from robobus.schemas.world import Place, WorldSnapshot


async def measure(messages: int, robots: int) -> dict[str, float]:
    async with Bus.connect("memory://", name="bench", options=BusOptions(prefix="bench")) as bus:
        bridge = FoxgloveBridge(bus, BridgeOptions(port=0))
        server = foxglove.start_server(port=0, context=bridge.context)
        topics = Topics("bench")
        msgs = [Message(topics.state(f"r{i % robots}"), msgspec.msgpack.encode(RobotState(
            f"r{i % robots}", Pose(x=i * 0.01, y=1.0, theta=0.5), battery=0.9)))
            for i in range(messages)]
        t0 = time.perf_counter()
        for msg in msgs:
            bridge.forward(msg)
        forward_us = (time.perf_counter() - t0) / messages * 1e6
        world = WorldSnapshot(places={f"p{i}": Place(f"p{i}", (i, 0.0)) for i in range(10)})
        t0 = time.perf_counter()
        for _ in range(100):
            scene_update(world, bridge.scene.states).encode()
        scene_ms = (time.perf_counter() - t0) / 100 * 1e3
        server.stop()
    return {"forward_us_per_message": forward_us, "scene_ms_per_redraw": scene_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--robots", type=int, default=50)
    args = parser.parse_args()
    figures = anyio.run(measure, args.messages, args.robots)
    print(f"{args.messages} RobotState messages, {args.robots} robots: "
          f"forward {figures['forward_us_per_message']:.1f} us/message, scene redraw "
          f"{figures['scene_ms_per_redraw']:.2f} ms ({args.robots} robots, 10 places)")


if __name__ == "__main__":
    main()
