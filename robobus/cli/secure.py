"""``robobus secure init``: credentials, TLS and ACLs for a bus nobody else can use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

secure_app = typer.Typer(help="Security: TLS, passwords, ACLs and CURVE keys.", no_args_is_help=True)

DEMO_FLEET = ["realman_1", "g1", "agilex"]


@secure_app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write keys, certificates and configs")],
    robots: Annotated[list[str] | None, typer.Option("--robot", help="Robot account (repeatable)")] = None,
    operators: Annotated[list[str] | None, typer.Option("--operator", help="Operator account")] = None,
    host: Annotated[str, typer.Option(help="Address the broker listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TLS port of the broker")] = 8883,
    prefix: Annotated[str, typer.Option(envvar="ROBOBUS_PREFIX")] = "robobus",
) -> None:
    """Generate a CA, server certificate, Mosquitto TLS config, password file, ACL and CURVE keys."""
    from robobus.secure import SecureConfig, SecureInitError, secure_init

    cfg = SecureConfig(directory, robots or DEMO_FLEET, operators or ["operator"], host, port, prefix)
    try:
        files = secure_init(cfg)
    except SecureInitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {len(files)} files to {directory} for accounts: {', '.join(cfg.accounts)}")
    typer.echo(f"broker:  mosquitto -c {directory / 'mosquitto.conf'}")
    typer.echo(f"hub:     robobus hub --curve-keys {directory / 'zmq'}  (enforces policy.json)")
    typer.echo(f"policy:  {directory / 'policy.json'}; after editing it: robobus secure acl {directory}")
    typer.echo(f"agents:  set -a; . {directory / 'env' / '<account>.env'}; set +a; robobus edge ...")


@secure_app.command("acl")
def acl(
    directory: Annotated[Path, typer.Argument(help="A `secure init` directory")],
) -> None:
    """Rewrite the Mosquitto ACL from policy.json (the hub reads policy.json when it starts).

    Mosquitto rereads its ACL on SIGHUP; restart the hub for its part."""
    from robobus.bus.policy import load, mosquitto_acl

    try:
        policy = load(directory / "policy.json")
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    (directory / "acl").write_text(mosquitto_acl(policy))
    typer.echo(f"wrote {directory / 'acl'} for accounts: {', '.join(policy.accounts)}")


def register(app: typer.Typer) -> None:
    app.add_typer(secure_app, name="secure")
