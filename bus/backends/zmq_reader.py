"""Reading ZeroMQ sockets on the asyncio loop, through their file descriptors.

Sockets are drained from the loop's reader callback and messages handed over synchronously:
one wake-up per burst, no task hop. Only a full BLOCK buffer pauses the socket (ZeroMQ then
queues up to its high-water mark); a task resumes it once the buffer has room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast

import anyio.abc
import zmq

from robobus.bus.zmq_wire import EVENTS, NOBLOCK, POLLIN

#: handles one message's frames; returns an awaitable when delivery must wait (backpressure)
Handler = Callable[[list[bytes]], Awaitable[None] | None]


def watch(loop: asyncio.AbstractEventLoop, sock: zmq.Socket, handle: Handler,
          task_group: anyio.abc.TaskGroup, closed: Callable[[], bool]) -> Callable[[], None]:
    """Read ``sock`` whenever it is readable; returns the drain function (call it again after
    a send or setsockopt on the socket: ZeroMQ's FD is edge-triggered, see ``_kick``)."""
    paused = [False]
    recv = sock.recv
    # pyzmq types getsockopt as int | bytes | str for every option; EVENTS is an int
    events = cast("Callable[[], int]", partial(sock.getsockopt, EVENTS))

    def drain() -> None:
        # Asked first: the FD also wakes us for state changes with nothing to read, and a
        # recv that raises zmq.Again (~3.5 µs) costs more than this query (~1.5 µs).
        if paused[0] or closed() or not events() & POLLIN:
            return
        burst = False
        while True:
            try:
                # Frame.more is a plain attribute; getsockopt(RCVMORE) costs ~1 µs each
                frame = recv(NOBLOCK, copy=False)
                frames = [frame.bytes]
                while frame.more:
                    frame = recv(NOBLOCK, copy=False)
                    frames.append(frame.bytes)
            except zmq.Again:  # the end of a burst: one exception per burst, not per message
                if closed() or not events() & POLLIN:
                    return
                continue
            pending = handle(frames)
            if pending is not None:
                paused[0] = True
                task_group.start_soon(resume, pending, name="zmq-backpressure")
                return
            if not burst:
                # A lone message (a request, a reply) is the common wake-up: one EVENTS query
                # ends it; a burst goes on reading until the socket is empty.
                burst = True
                if closed() or not events() & POLLIN:
                    return

    async def resume(pending: Awaitable[None]) -> None:
        await pending
        paused[0] = False
        drain()

    loop.add_reader(sock.FD, drain)
    loop.call_soon(drain)
    return drain
