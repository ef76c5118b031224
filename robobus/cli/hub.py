"""``robobus hub``: the ZeroMQ hub process."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Annotated

import typer

from robobus.bus.errors import BusError
from robobus.cli.common import BusOpt

if TYPE_CHECKING:
    from robobus.bus.hub_guard import HubGuard


def hub(
    bus_url: BusOpt = "zmq://127.0.0.1:7650",
    curve_keys: Annotated[
        str | None,
        typer.Option("--curve-keys", envvar="ROBOBUS_HUB_KEYS",
                     help="Directory from `robobus secure init`: enables CURVE authentication"),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", envvar="ROBOBUS_HUB_POLICY",
                     help="policy.json from `robobus secure init` (default: the one beside the "
                          "--curve-keys directory): who may publish and subscribe where")] = None,
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
    secret, keys, guard = None, None, None
    if curve_keys:
        from robobus.bus.security import zmq_hub_keys

        secret, keys = zmq_hub_keys(curve_keys)
        guard = _guard(curve_keys, policy)
    elif policy:
        raise typer.BadParameter("--policy needs --curve-keys: the policy names CURVE keys")
    try:
        server = Hub(bus_url, curve_secret=secret, authorized_keys=keys, replay_buffer=replay_buffer,
                     guard=guard)
    except BusError as exc:
        raise typer.BadParameter(str(exc)) from exc
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.serve()


def _guard(curve_keys: str, policy: str | None) -> HubGuard | None:
    """The policy's enforcer, or None (any admitted key may do anything) when there is none."""
    from robobus.bus import policy as policies
    from robobus.bus.hub_guard import HubGuard
    from robobus.bus.security import find_policy, zmq_hub_accounts

    path = policy or find_policy(curve_keys)
    if path is None:
        typer.echo("warning: no policy.json beside the CURVE keys: every admitted key may "
                   "publish and subscribe anywhere (run `robobus secure init`)", err=True)
        return None
    try:
        return HubGuard(policies.load(path), zmq_hub_accounts(curve_keys))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc


def register(app: typer.Typer) -> None:
    app.command("hub")(hub)
