"""The dashboard's server: one page and one WebSocket route (Starlette), served by uvicorn."""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import anyio
import anyio.abc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from robobus.bus.api import Bus, BusOptions
from robobus.bus.policy import account_of
from robobus.dashboard.access import instruct_permission
from robobus.dashboard.gateway import CLIENT_BUFFER, FRAME_LIMIT, Gateway
from robobus.schemas.topics import Topics

#: frames larger than this are refused by the WebSocket protocol itself (close 1009); frames up
#: to it reach the gateway, which answers those over FRAME_LIMIT with an error frame
WS_MAX_SIZE = 16 * FRAME_LIMIT


@dataclass(slots=True)
class DashboardSettings:
    """Where the dashboard listens and which bus it shows."""

    bus: str
    prefix: str = "robobus"
    host: str = "127.0.0.1"
    port: int = 8770
    read_only: bool = False
    policy: str | None = None


def page() -> str:
    """The dashboard's single HTML+JS page (no build step, no third-party scripts)."""
    return resources.files("robobus.dashboard").joinpath("index.html").read_text("utf-8")


def create_app(gateway: Gateway) -> Starlette:
    """``/``: the page; ``/ws``: the gateway, one session per browser."""
    html = page()

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await session(gateway, websocket)

    return Starlette(routes=[Route("/", index), WebSocketRoute("/ws", ws)])


async def session(gateway: Gateway, websocket: WebSocket) -> None:
    """Serve one browser: the snapshot, then live frames and answers, until it goes."""
    send, receive = anyio.create_memory_object_stream[str](CLIENT_BUFFER)
    snapshot = gateway.snapshot()  # taken and registered in one step: no frame falls between
    gateway.clients.add(send)

    async def pump() -> None:
        for frame in snapshot:
            await websocket.send_text(frame)
        async with receive:
            async for frame in receive:
                await websocket.send_text(frame)
        await websocket.close(1013, "too far behind: reconnect")  # dropped by broadcast

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, name="dashboard:pump")
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                answer = await gateway.handle(msg.get("text"), msg.get("bytes"))
                with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                    send.send_nowait(answer)
            tg.cancel_scope.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        gateway.clients.discard(send)
        send.close()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: robobus stops it (SIGTERM, SIGINT)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts so that port 0 works."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(settings: DashboardSettings, *,
                task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
    """Run the dashboard until SIGTERM or SIGINT; ``started(url)`` once it answers."""
    topics = Topics(settings.prefix)
    own = topics.instructions_from(account_of(settings.bus))  # a secured bus: its account's
    permission = instruct_permission(settings.bus, own,
                                     read_only=settings.read_only, policy=settings.policy)
    options = BusOptions(prefix=settings.prefix, report_errors=False)
    async with Bus.connect(settings.bus, name="dashboard", options=options) as bus, \
            anyio.create_task_group() as tg:
        gateway = Gateway(bus, topics, permission)
        await tg.start(gateway.run)
        sock = bind(settings.host, settings.port)
        config = uvicorn.Config(create_app(gateway), ws="websockets-sansio", ws_max_size=WS_MAX_SIZE,
                                lifespan="off", access_log=False, log_level="warning",
                                timeout_graceful_shutdown=2)
        server = _Server(config)
        tg.start_soon(_stop_on_signal, server, name="dashboard:signals")
        host, port = sock.getsockname()[:2]
        task_status.started(f"http://{host}:{port}/")
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
            tg.cancel_scope.cancel()


async def _stop_on_signal(server: uvicorn.Server) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            server.should_exit = True
            return
