"""Skills from MCP servers: the tools of a profile's ``mcp:`` servers as skills of the robot.

Each server is a stdio command or a streamable-HTTP URL (``profile.McpServer``). At start-up
the edge connects, lists the tools and registers one :class:`SkillDef` per tool in the same
skill registry as the Python skills: the argument struct and the published schema come from
the tool's ``inputSchema``; resource, world change, preconditions and effects come from the
profile, so the brain's planner can use a tool as it uses ``navigate`` or ``pick``.

At run time a call is a ``tools/call``. Cancelling the skill (a cancel command or its timeout,
in real seconds) cancels the call, and the SDK then sends ``notifications/cancelled``. Errors
become reason codes: ``tool_error`` (the result has ``isError``), ``mcp_error`` (a JSON-RPC
error), ``bad_reply`` (a result or a line that is not valid MCP), ``server_down`` (the
connection closed during the call) and ``server_unreachable`` (no connection when asked). A
lost connection is opened again on the next call, so a crashed stdio server is restarted.
"""

from __future__ import annotations

import keyword
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import msgspec
import structlog
from mcp.client.session import ClientSession, IncomingMessage
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, PARSE_ERROR, CallToolResult, PaginatedRequestParams, Tool
from pydantic import ValidationError

from robobus.edge_agent.errors import EdgeError
from robobus.edge_agent.profile import McpServer, McpTool
from robobus.skills.context import SkillContext, SkillParams
from robobus.skills.errors import SkillFailed
from robobus.skills.registry import SkillDef, SkillFn, SkillRegistry

log = structlog.get_logger("edge.mcp")

_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool,
                               "array": list[Any], "object": dict[str, Any], "null": None}
Transport = AbstractAsyncContextManager[Any]


class McpUnavailable(EdgeError):
    """An MCP server of the profile could not be used at start-up; ``server`` names it."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"MCP server {server!r}: {reason}")
        self.server = server
        self.reason = reason


def describe(exc: BaseException) -> str:
    """One line for a transport failure, looking inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer to initialize/tools/list within the connect timeout"
    text = " ".join(str(exc).split())  # pydantic's messages span lines
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class McpConnection:
    """One server's connection, held by :meth:`serve` and reopened after a loss."""

    def __init__(self, spec: McpServer, robot: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.session: ClientSession | None = None
        self.failure = ""
        self.log = log.bind(agent="edge", robot=robot, mcp=spec.name)
        self._wanted = anyio.Event()
        self._wanted.set()
        self._settled = anyio.Event()
        self._lost = anyio.Event()
        self._calls: set[anyio.CancelScope] = set()
        self._garbage = ""

    async def serve(self, *, task_status: anyio.abc.TaskStatus[list[Tool]] = anyio.TASK_STATUS_IGNORED,
                    ) -> None:
        """Connect (raise :class:`McpUnavailable` if the first try fails), then hold the
        connection; after a loss, connect again when a call asks for it."""
        first = True
        while True:
            await self._wanted.wait()
            self._wanted = anyio.Event()
            connected = False
            try:
                async with AsyncExitStack() as stack:
                    tools = await self._open(stack)
                    connected = True
                    if first:
                        task_status.started(tools)
                        first = False
                    self._settle()
                    await self._lost.wait()
                    self.session = None
            except Exception as exc:  # noqa: BLE001 - the boundary: every failure becomes a reason
                self.session = None
                if connected:  # closing a lost connection failed too (e.g. HTTP DELETE)
                    self.log.info("mcp_close_failed", error=describe(exc))
                else:
                    self._failed(exc, first)
            self._lost = anyio.Event()

    def _failed(self, exc: Exception, first: bool) -> None:
        reason = describe(exc) + (f"; it wrote a line that is not MCP: {self._garbage}"
                                  if self._garbage else "")
        if first:
            raise McpUnavailable(self.name, reason) from exc
        self.failure = reason
        self.log.warning("mcp_connect_failed", error=reason)
        self._settle()  # callers waiting for this attempt get its failure

    def _settle(self) -> None:
        self._settled.set()
        self._settled = anyio.Event()

    def _transport(self) -> Transport:
        if self.spec.url is not None:
            return streamable_http_client(self.spec.url)
        assert self.spec.command
        cmd = list(self.spec.command)
        if cmd[0] in ("python", "python3"):  # the edge's interpreter, with its packages
            cmd[0] = sys.executable
        return stdio_client(StdioServerParameters(command=cmd[0], args=cmd[1:], cwd=self.spec.cwd,
                                                  env=dict(self.spec.env) or None))

    async def _open(self, stack: AsyncExitStack) -> list[Tool]:
        self._garbage = ""
        read, write = await stack.enter_async_context(self._transport())
        session = await stack.enter_async_context(
            ClientSession(read, write, message_handler=self._on_message))
        with anyio.fail_after(self.spec.connect_timeout_s):
            await session.initialize()
            listing = await session.list_tools()
            tools = list(listing.tools)
            while listing.next_cursor:
                listing = await session.list_tools(
                    params=PaginatedRequestParams(cursor=listing.next_cursor))
                tools += listing.tools
        self.session, self.failure = session, ""
        self.log.info("mcp_connected", tools=[t.name for t in tools])
        return tools

    async def _on_message(self, message: IncomingMessage) -> None:
        """A line that is not JSON-RPC cannot be matched to its call: fail those in flight.
        (Other transport errors end in a closed connection or an error reply of their own.)"""
        if isinstance(message, ValueError):  # pydantic's ValidationError included
            self._garbage = describe(message)
            self.log.warning("mcp_garbage", error=self._garbage)
            for scope in list(self._calls):
                scope.cancel()

    async def _current(self) -> ClientSession:
        if self.session is None:
            self._wanted.set()
            settled = self._settled
            with anyio.move_on_after(self.spec.connect_timeout_s + 1.0):
                await settled.wait()
        if self.session is None:
            raise SkillFailed(f"MCP server {self.name!r} is unreachable: "
                              f"{self.failure or 'not connected'}", "server_unreachable")
        return self.session

    async def call(self, tool: str, arguments: dict[str, Any], progress: ProgressFnT | None = None,
                   ) -> CallToolResult:
        """``tools/call``; raise :class:`SkillFailed` with a precise reason code."""
        session = await self._current()
        scope = anyio.CancelScope()
        self._calls.add(scope)
        try:
            with scope:
                return await session.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as exc:
            if exc.code == PARSE_ERROR:  # HTTP: the reply to this call was not JSON-RPC
                raise SkillFailed(f"MCP server {self.name!r} sent a reply that is not MCP for "
                                  f"{tool!r}: {exc.message}", "bad_reply") from exc
            if exc.code != CONNECTION_CLOSED:
                raise SkillFailed(f"MCP server {self.name!r} answered {tool!r} with error "
                                  f"{exc.code}: {exc.message}", "mcp_error") from exc
            if session is self.session:
                self.session = None
                self._lost.set()
            raise SkillFailed(f"MCP server {self.name!r} closed the connection during {tool!r} "
                              "(it exited, crashed or dropped the session); the next call "
                              "reconnects",
                              "server_down") from exc
        except (ValidationError, RuntimeError) as exc:
            raise SkillFailed(f"MCP server {self.name!r} sent an invalid result for {tool!r}: "
                              f"{describe(exc)}", "bad_reply") from exc
        finally:
            self._calls.discard(scope)
        raise SkillFailed(f"MCP server {self.name!r} sent a line that is not MCP during {tool!r}: "
                          f"{self._garbage}", "bad_reply")


def args_struct(tool: Tool) -> type[msgspec.Struct]:
    """A msgspec struct for the tool's ``inputSchema``: top-level properties by JSON type
    (deeper checks are the server's); optional ones are left out of the call when not given."""
    schema: Mapping[str, Any] = tool.input_schema or {}
    required = set(schema.get("required") or ())
    fields: list[tuple[str, Any, Any]] = []
    for i, (name, prop) in enumerate((schema.get("properties") or {}).items()):
        attr = name if name.isidentifier() and not keyword.iskeyword(name) else f"arg_{i}"
        typ = _py_type(prop if isinstance(prop, dict) else {})
        if name in required:
            fields.append((attr, typ, msgspec.field(name=name)))
        else:
            fields.append((attr, typ | msgspec.UnsetType, msgspec.field(default=msgspec.UNSET, name=name)))
    return msgspec.defstruct(f"{tool.name}_args", fields, kw_only=True, forbid_unknown_fields=True)


def _py_type(prop: Mapping[str, Any]) -> Any:
    kind = prop.get("type")
    kinds: list[Any] = kind if isinstance(kind, list) else [kind]
    if not kinds or not all(isinstance(k, str) and k in _JSON_TYPES for k in kinds):
        return Any
    out: Any = _JSON_TYPES[str(kinds[0])]
    for k in kinds[1:]:
        out = out | _JSON_TYPES[str(k)]
    return out


def result_of(result: CallToolResult) -> dict[str, Any]:
    """A tool result as a feedback ``result``: its structured content, else its content."""
    if isinstance(result.structured_content, dict):
        return result.structured_content
    return {"content": [_content(c) for c in result.content]}


def _content(block: Any) -> Any:
    text = getattr(block, "text", None)
    return text if isinstance(text, str) else {"type": getattr(block, "type", "unknown")}


def error_text(result: CallToolResult) -> str:
    texts = [c for c in map(_content, result.content) if isinstance(c, str)]
    return " ".join(texts) or "no message"


def change_args(decl: McpTool, arguments: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(object, target) of the declared world change, by what each argument names."""
    obj = target = None
    for arg, kind in decl.param_kinds.items():
        value = arguments.get(arg)
        if not isinstance(value, str):
            continue
        if kind == "object":
            obj = value
        elif kind != "kind":
            target = value
    return obj, target


def tool_skill(conn: McpConnection, tool: Tool, decl: McpTool) -> SkillDef:
    """The :class:`SkillDef` that runs ``tool`` on ``conn``."""
    args_type = args_struct(tool)
    return SkillDef(
        name=decl.skill or tool.name, fn=_caller(conn, tool.name, decl), args_type=args_type,
        result_type=None, timeout_s=decl.timeout_s or conn.spec.timeout_s, resource=decl.resource,
        preconditions=tuple(decl.preconditions), effects=tuple(decl.effects),
        param_kinds=dict(decl.param_kinds), change=decl.change,
        doc=(tool.description or "").strip().split("\n")[0],
        args_schema=dict(tool.input_schema or {}), result_schema=dict(tool.output_schema or {}),
        scaled=False,
    )


def _caller(conn: McpConnection, tool: str, decl: McpTool) -> SkillFn:
    async def call(ctx: SkillContext, args: msgspec.Struct) -> dict[str, Any]:
        arguments = msgspec.to_builtins(args)

        async def report(progress: float, total: float | None, message: str | None) -> None:
            if total:  # MCP progress without a total has no percentage
                await ctx.progress(100.0 * progress / total)

        result = await conn.call(tool, arguments, report)
        if result.is_error:
            raise SkillFailed(f"tool {tool!r} of MCP server {conn.name!r} failed: "
                              f"{error_text(result)}", "tool_error")
        if decl.change is not None:
            obj, target = change_args(decl, arguments)
            await ctx.change(decl.change, object=obj, target=target)
        return result_of(result)

    # the registry tells a re-registration from a clash by this name
    call.__qualname__ = f"mcp:{conn.name}.{tool}"
    return call


def offered(spec: McpServer, tools: list[Tool]) -> list[tuple[Tool, McpTool]]:
    """The tools to register with their declarations; raise if a declared one is missing."""
    names = {t.name for t in tools}
    missing = sorted(set(spec.tools) - names)
    if missing:
        raise McpUnavailable(spec.name, f"no tool {', '.join(missing)}; it offers: "
                             f"{', '.join(sorted(names)) or 'none'}")
    return [(t, spec.tools.get(t.name, McpTool())) for t in tools
            if spec.expose == "all" or t.name in spec.tools]


@asynccontextmanager
async def mcp_skills(servers: list[McpServer], robot: str, registry: SkillRegistry
                     ) -> AsyncIterator[dict[str, tuple[SkillDef, SkillParams]]]:
    """Connect to ``servers`` and yield their tools as skills (also added to ``registry``);
    the connections close on exit."""
    async with anyio.create_task_group() as tg:
        skills: dict[str, tuple[SkillDef, SkillParams]] = {}
        for spec in servers:
            conn = McpConnection(spec, robot)
            tools = await tg.start(conn.serve, name=f"edge:{robot}:mcp:{spec.name}")
            for tool, decl in offered(spec, tools):
                sdef = registry.add(tool_skill(conn, tool, decl))
                skills[sdef.name] = (sdef, SkillParams())
        try:
            yield skills
        finally:
            tg.cancel_scope.cancel()


__all__ = ["McpConnection", "McpUnavailable", "mcp_skills", "tool_skill"]
