"""A robot skill server speaking MCP, the kind a robobus profile can point at.

Written with the official ``mcp`` SDK's ``MCPServer`` (mcp 2.x's name for FastMCP). Its tools
drive an imaginary gardening/warehouse robot: ``navigate_to``, ``grasp`` and ``place_on`` can
carry the robobus planner's world changes (the profile declares that), ``water_plants`` and
``scan_shelf`` are plain tools. ``refuse``, ``stall`` and ``crash`` misbehave on purpose, for
the edge agent's error mapping tests.

    python examples/mcp_skill_server.py                           # stdio
    python examples/mcp_skill_server.py --http --port 8765        # streamable HTTP on /mcp
"""

from __future__ import annotations

import argparse
import os

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("robobus-example-skills")
#: tool calls that ended by the client's cancellation (``notifications/cancelled``)
cancelled: list[str] = []


async def _move(seconds: float) -> None:
    await anyio.sleep(seconds)


@server.tool()
async def navigate_to(target: str) -> dict[str, str]:
    """Drive the base to a named place."""
    await _move(0.05)
    return {"arrived": target}


@server.tool()
async def grasp(object: str) -> dict[str, str]:
    """Close the gripper on an object at the robot's place."""
    await _move(0.05)
    return {"holding": object}


@server.tool()
async def place_on(object: str, target: str) -> dict[str, str]:
    """Put the held object down on a place or into a container."""
    await _move(0.05)
    return {"placed": object, "on": target}


@server.tool()
async def water_plants(zone: str, ctx: Context, litres: float = 1.0) -> dict[str, object]:
    """Water the plants of a garden zone, reporting progress per half litre."""
    steps = max(1, round(litres * 2))
    for step in range(1, steps + 1):
        await _move(0.02)
        await ctx.report_progress(step, steps)
    return {"zone": zone, "litres": litres}


@server.tool()
async def scan_shelf(shelf: str) -> dict[str, object]:
    """Read the labels on a shelf."""
    await _move(0.02)
    return {"shelf": shelf, "items": [f"{shelf}-box-1", f"{shelf}-box-2"]}


@server.tool()
async def refuse(reason: str = "not today") -> str:
    """Always fails: the result carries isError."""
    raise ToolError(reason)


@server.tool()
async def stall(label: str = "stall") -> str:
    """Never answers; records the call if the client cancels it."""
    try:
        await anyio.sleep_forever()
    finally:
        cancelled.append(label)
    return label


@server.tool()
async def cancelled_calls() -> list[str]:
    """The labels of ``stall`` calls the client cancelled so far."""
    return list(cancelled)


@server.tool()
async def crash(code: int = 3) -> str:
    """Kill the server process in the middle of the call."""
    os._exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run()


if __name__ == "__main__":
    main()
