"""The policy's verdict on one control command of the ZeroMQ hub (see :mod:`bus.hub_guard`).

Kept apart from the hub's loop: the hub asks :func:`check`, sends the answer it gets (``DENY``
or ``WHO``) and reports a refusal; the decision itself reads only the guard's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from robobus.bus import zmq_wire as wire
from robobus.bus.hub_guard import HubGuard

_dict = msgspec.msgpack.Decoder(dict)


@dataclass(slots=True)
class Verdict:
    """``ok``: handle the command; ``denied``: (action, target) to report; ``answer``: frames
    for the client; ``header``: the acknowledged publish's header, stamped with the account."""

    ok: bool = True
    denied: tuple[str, str] | None = None
    answer: list[bytes] | None = None
    header: bytes | None = None


def check(guard: HubGuard, account: str, client: str, cmd: bytes, args: list[bytes]) -> Verdict:
    """May ``account`` (the key's), speaking as ``client``, send ``cmd``?"""
    if cmd == wire.HELLO:
        denied = _will_denied(guard, account, args[0]) if args else None
        if denied is None and not guard.bind(client, account):
            denied = ("use the client id", client)
        return _no(denied, [wire.DENY, wire.HELLO, " ".join(denied).encode()]) if denied else Verdict()
    if cmd in (wire.HEARTBEAT, wire.BYE):
        return Verdict()  # about its own connection only (a stranger's heartbeat is answered WHO)
    holder = guard.clients.get(client)
    if holder is None:  # no hello yet (the hub restarted): hello first, no refusal
        return Verdict(ok=False, answer=[wire.WHO])
    if holder != account:
        return _no(("send control commands as client", client))
    if cmd == wire.PUB and len(args) == 4:
        return check_publish(guard, account, args[0], args[1], args[2])
    if cmd == wire.DURABLE and args:
        return _no(_durable_denied(guard, account, args[0].decode(errors="replace")))
    if cmd == wire.SNAP and len(args) == 3 and not args[2].startswith(
            f"{wire.PROBE_PREFIX}{client}/".encode()):
        return _no(("fence a snapshot on", args[2].decode(errors="replace")))
    return Verdict()


def check_publish(guard: HubGuard, account: str, ack_id: bytes, topic: bytes, header: bytes
                  ) -> Verdict:
    """One acknowledged publish, alone (``PUB``) or inside a batch (``PUBS``: the hub asks
    for each entry, after :func:`check` admitted the batch's sender)."""
    if not guard.may_publish(account, topic):
        return _no(("publish on", topic.decode(errors="replace")), [wire.DENY, ack_id, topic])
    stamped = guard.stamp_header(header, account)
    if stamped is None:
        raise ValueError("malformed data header")
    return Verdict(header=stamped)  # the sender receivers see is the key's account


def _no(denied: tuple[str, str] | None, answer: list[bytes] | None = None) -> Verdict:
    return Verdict(ok=denied is None, denied=denied, answer=answer if denied else None)


def _will_denied(guard: HubGuard, account: str, hello: bytes) -> tuple[str, str] | None:
    will = _dict.decode(hello).get("will")
    if isinstance(will, dict) and isinstance(will.get("topic"), str):
        if not guard.may_publish(account, will["topic"].encode()):
            return ("leave a last will on", will["topic"])
    return None


def _durable_denied(guard: HubGuard, account: str, name: str) -> tuple[str, str] | None:
    """A durable stream carries every topic, and belongs to the account that made it; one
    named after an account is that account's, even before it first attaches."""
    if not guard.may_stream(account):
        return ("receive the durable stream", name)
    owner = name if name in guard.policy.accounts else guard.durable_owner.setdefault(name, account)
    if owner != account:
        return (f"take over the durable stream of account {owner!r}:", name)
    return None
