"""The fleet as an MCP server (issue 17, item 4): ``robobus mcp``.

Any MCP-capable assistant can drive the fleet through four tools and read two resources:

* ``send_instruction(text, priority, timeout_s)``: publish an instruction and wait for its final
  status. The instruction asks for replies (docs/contracts.md, "Replies to instructions"): the
  first one, ``accepted`` or the brain's refusal, answers :meth:`Bus.request`; the rest of the
  task's statuses are followed on ``P/tasks/{task_id}``, subscribed before the instruction goes.
* ``task_status(task_id)``, ``list_robots()``, ``where_is(name)``: the memory agent's queries
  (``task``, ``robots``, ``where``; :mod:`robobus.memory_store.query`).
* ``robobus://scene`` (the world memory holds now) and ``robobus://asyncapi`` (the contract).

A failure the caller can act on (no brain, a refused instruction, an unknown object, no memory
agent) is a tool error with the reason, which the SDK returns as ``isError`` with that text.
The SDK's ``MCPServer`` (called FastMCP before mcp 2) serves stdio or streamable HTTP.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import msgspec
import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field

from robobus.asyncapi import document
from robobus.bus import Bus, BusError, DecodeError
from robobus.bus.policy import instructions_topic
from robobus.schemas.codec import decode_as
from robobus.schemas.memory import MemoryQuery, QueryReply
from robobus.schemas.messages import ErrorReport, Instruction, TaskStatus
from robobus.schemas.tasks import FINAL
from robobus.schemas.topics import Topics

log = structlog.get_logger("robobus.mcp")
#: hears of a task's statuses while an instruction is followed: (how many so far, a line)
Progress = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class McpOptions:
    """How long the gateway waits: for the brain's first reply and for memory's answers."""

    accept_timeout_s: float = 10.0
    query_timeout_s: float = 5.0


class FleetGateway:
    """What the MCP tools do, on one bus connection."""

    def __init__(self, bus: Bus, topics: Topics, options: McpOptions | None = None) -> None:
        self.bus, self.topics = bus, topics
        self.options = options or McpOptions()

    async def instruct(self, text: str, priority: int, timeout_s: float,
                       progress: Progress | None = None) -> dict[str, Any]:
        """Send ``text``; return its final status, or the latest one if ``timeout_s`` runs out.
        ``progress`` hears of every status on the way (the n-th, and a line about it)."""
        tid = f"mcp-{secrets.token_hex(4)}"
        instruction = Instruction(text, priority, tid, source="mcp")
        async with self.bus.subscribe(self.topics.task(tid), TaskStatus) as sub:
            first = await self._first_reply(instruction)
            latest, plan, seen = first, first.plan, 1
            with anyio.move_on_after(timeout_s):
                while latest.status not in FINAL:
                    if progress is not None:
                        await progress(seen, _line(latest))
                    latest = (await sub.get()).data
                    plan, seen = latest.plan or plan, seen + 1  # the final status has no plan
        log.info("mcp_instruction", task=tid, status=latest.status)
        return _status(msgspec.structs.replace(latest, plan=plan), final=latest.status in FINAL)

    async def _first_reply(self, instruction: Instruction) -> TaskStatus:
        try:
            topic = instructions_topic(self.bus.url, self.topics.prefix)  # a secured bus: its own
            msg = await self.bus.request(topic, instruction,
                                         timeout=self.options.accept_timeout_s, qos=1)
        except BusError as exc:
            raise ToolError(f"no brain answered within {self.options.accept_timeout_s:g} s ({exc}); "
                            f"is a brain running? see {self.topics.brain_status}") from exc
        try:
            return decode_as(msg.payload, TaskStatus, msg.topic, msg.content_type)
        except DecodeError:
            pass  # not a status: the brain's refusal (an ErrorReport), or garbage
        try:
            report = decode_as(msg.payload, ErrorReport, msg.topic, msg.content_type)
        except DecodeError as exc:
            raise ToolError(f"the brain's reply is neither a status nor a refusal: {exc}") from exc
        raise ToolError(f"the brain refused the instruction ({report.code}): {report.reason}")

    async def query(self, query: MemoryQuery) -> Any:
        """Ask the memory agent; its refusal or silence becomes a tool error with the reason."""
        try:
            msg = await self.bus.request(self.topics.memory_query, query,
                                         timeout=self.options.query_timeout_s)
            reply = decode_as(msg.payload, QueryReply, msg.topic, msg.content_type)
        except BusError as exc:
            raise ToolError(f"the memory agent did not answer a {query.kind!r} query: {exc}") from exc
        if not reply.ok:
            raise ToolError(f"memory: {reply.error} ({reply.code or 'refused'})")
        return reply.result


def _line(st: TaskStatus) -> str:
    """One status as a line of progress: ``dispatched: g1 navigate``."""
    about = " ".join(filter(None, (st.robot, st.skill, st.reason)))
    return f"{st.status}: {about}" if about else st.status


def _status(st: TaskStatus, *, final: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"task_id": st.task_id, "status": st.status, "final": final}
    if st.reason:
        out["reason"] = st.reason
    if st.plan is not None:
        out["steps"] = [{"robot": s.robot, "skill": s.skill, "args": s.args} for s in st.plan.steps]
    return out


def _robot_summary(name: str, view: dict[str, Any]) -> dict[str, Any]:
    state = view.get("state") or {}
    return {"robot": name, "online": view.get("alive") is True, "place": view.get("place"),
            "holding": view.get("holding") or [], "battery": state.get("battery"),
            "busy": state.get("busy"), "pose": state.get("pose")}


def build_server(gateway: FleetGateway) -> MCPServer[Any]:
    """An ``MCPServer`` whose tools and resources go through ``gateway``."""
    server: MCPServer[Any] = MCPServer(
        "robobus", instructions="Drive a robobus robot fleet: send instructions in plain language "
        "(e.g. 'bring the apple to the office desk'), follow tasks, see robots and objects.")

    @server.tool()
    async def send_instruction(
        text: Annotated[str, Field(min_length=1, max_length=4096, description="the instruction")],
        priority: Annotated[int, Field(ge=0, le=10, description="higher runs first")] = 0,
        timeout_s: Annotated[float, Field(gt=0, le=3600, description="how long to wait")] = 120.0,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Send an instruction to the fleet's brain and wait for its outcome (done, failed or
        cancelled, with the reason); on timeout, the latest status with final=false. Each status
        on the way is reported as progress."""
        async def progress(n: int, line: str) -> None:
            if ctx is not None:
                await ctx.report_progress(n, None, line)

        return await gateway.instruct(text, priority, timeout_s, progress)

    @server.tool()
    async def task_status(
        task_id: Annotated[str, Field(min_length=1, max_length=256)],
    ) -> dict[str, Any]:
        """A task's status, plan and steps, as the memory agent records them."""
        record: dict[str, Any] = await gateway.query(MemoryQuery(kind="task", name=task_id))
        return record

    @server.tool()
    async def list_robots() -> dict[str, Any]:
        """Every robot the fleet knows: online, place, what it holds, battery, busy, pose."""
        views = await gateway.query(MemoryQuery(kind="robots"))
        return {"robots": [_robot_summary(name, v) for name, v in sorted(views.items())]}

    @server.tool()
    async def where_is(
        name: Annotated[str, Field(min_length=1, max_length=256, description="an object's name")],
    ) -> dict[str, Any]:
        """Where an object is: its location (a place, a container or a robot) and position."""
        found: dict[str, Any] = await gateway.query(MemoryQuery(kind="where", name=name))
        return found

    @server.resource("robobus://scene", mime_type="application/json")
    async def scene() -> str:
        """The world as the memory agent holds it now: places, objects, robots."""
        try:
            world = await gateway.query(MemoryQuery(kind="world"))
        except ToolError as exc:
            raise ResourceError(str(exc)) from exc
        return msgspec.json.encode(world).decode()

    @server.resource("robobus://asyncapi", mime_type="application/json")
    def asyncapi() -> str:
        """The bus contract as an AsyncAPI 3 document, under this fleet's prefix."""
        return msgspec.json.encode(document(gateway.topics.prefix)).decode()

    return server


async def serve(bus: Bus, *, http_port: int | None = None, host: str = "127.0.0.1",
                options: McpOptions | None = None) -> None:
    """Serve the fleet on ``bus`` over stdio, or streamable HTTP at ``http://host:port/mcp``."""
    server = build_server(FleetGateway(bus, Topics(bus.options.prefix), options))
    if http_port is None:
        await server.run_stdio_async()
    else:
        await server.run_streamable_http_async(host=host, port=http_port)
