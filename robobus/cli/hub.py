"""``robobus hub``: the ZeroMQ hub process."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from robobus.bus.errors import BusError
from robobus.cli.common import BusOpt


def hub(
    bus_url: BusOpt = "zmq://127.0.0.1:7650",
    curve_keys: Annotated[
        str | None,
        typer.Option("--curve-keys", envvar="ROBOBUS_HUB_KEYS",
                     help="Directory from `robobus secure init`: enables CURVE authentication"),
    ] = None,
    replay_buffer: Annotated[
        int, typer.Option("--replay-buffer", min=0,
                          help="Keep the last N messages for durable recorders (?durable=NAME) "
                               "to replay after a restart; 0 disables")] = 0,
) -> None:
    """Run the ZeroMQ hub (XSUB/XPUB forwarder, last-value cache, liveness, last wills).

    Binds PORT (publishers), PORT+1 (subscribers) and PORT+2 (control) on loopback by default.
    """
    from robobus.bus.hub import Hub

    if not bus_url.startswith("zmq"):
        raise typer.BadParameter(f"the hub serves zmq:// or zmq+ipc:// URLs, not {bus_url!r}")
    secret, keys = None, None
    if curve_keys:
        from robobus.bus.security import zmq_hub_keys

        secret, keys = zmq_hub_keys(curve_keys)
    try:
        server = Hub(bus_url, curve_secret=secret, authorized_keys=keys, replay_buffer=replay_buffer)
    except BusError as exc:
        raise typer.BadParameter(str(exc)) from exc
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.serve()


def register(app: typer.Typer) -> None:
    app.command("hub")(hub)
