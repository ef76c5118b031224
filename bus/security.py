"""Credentials for secured buses. Secrets come from files or the environment, never argv.

* ZeroMQ CURVE: ``ROBOBUS_ZMQ_KEYS=DIR`` names a directory made by ``robobus secure init``;
  clients use ``DIR/client.key_secret`` (or ``$ROBOBUS_ZMQ_CLIENT`` name) and ``DIR/hub.key``.
"""

from __future__ import annotations

import os
from pathlib import Path


def zmq_client_keys(url: str) -> tuple[bytes, bytes, bytes] | None:
    """(public, secret, server public) for a CURVE client, or None when CURVE is off."""
    directory = os.environ.get("ROBOBUS_ZMQ_KEYS")
    if not directory:
        return None
    import zmq.auth

    base = Path(directory)
    name = os.environ.get("ROBOBUS_ZMQ_CLIENT", "client")
    public, secret = zmq.auth.load_certificate(base / f"{name}.key_secret")
    server, _ = zmq.auth.load_certificate(base / "hub.key")
    if secret is None:
        raise FileNotFoundError(f"{base / (name + '.key_secret')} has no secret key")
    return public, secret, server


def zmq_hub_keys(directory: str | os.PathLike[str]) -> tuple[bytes, list[bytes]]:
    """(hub secret key, authorised client public keys) from a ``secure init`` directory."""
    import zmq.auth

    base = Path(directory)
    _, secret = zmq.auth.load_certificate(base / "hub.key_secret")
    if secret is None:
        raise FileNotFoundError(f"{base / 'hub.key_secret'} has no secret key")
    clients = []
    for path in sorted(base.glob("*.key")):
        if path.name != "hub.key":
            public, _ = zmq.auth.load_certificate(path)
            clients.append(public)
    return secret, clients


def zmq_hub_accounts(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Account name by client public key (z85, as ZAP's ``User-Id`` gives it): ``NAME.key``."""
    import zmq.auth

    accounts = {}
    for path in sorted(Path(directory).glob("*.key")):
        if path.name != "hub.key":
            public, _ = zmq.auth.load_certificate(path)
            accounts[public.decode()] = path.name.removesuffix(".key")
    return accounts


def find_policy(directory: str | os.PathLike[str]) -> Path | None:
    """The ``policy.json`` of a ``secure init`` directory, given its ``zmq/`` key directory."""
    base = Path(directory)
    for candidate in (base / "policy.json", base.parent / "policy.json"):
        if candidate.is_file():
            return candidate
    return None
