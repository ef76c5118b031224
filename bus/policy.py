"""Who may publish and subscribe where: one policy for the Mosquitto ACL and the ZeroMQ hub.

``robobus secure init`` writes ``policy.json``; the Mosquitto ``acl`` file is generated from it
(:func:`mosquitto_acl`) and the hub enforces it per CURVE key (:mod:`bus.hub_guard`). Patterns
are MQTT filters; ``{client}`` stands for the connection's own client id (Mosquitto's ``%c``),
so each client may read its own request/reply inbox and nobody else's.

ZeroMQ filters by prefix, not by pattern, and the hub cannot filter per subscriber on delivery
as Mosquitto does. So a subscription prefix is admitted only when every topic it can match is
readable (:meth:`Policy.may_subscribe`): ``robobus/robots/`` is refused to a robot that may
read only ``robobus/robots/r1/#``, where Mosquitto grants ``robobus/robots/+/skills/#`` and
then delivers nothing of the other robots.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from robobus.bus.topics import matches
from robobus.schemas.topics import Topics

CLIENT = "{client}"


class Grants(msgspec.Struct, forbid_unknown_fields=True):
    """Topic filters an account may publish on and subscribe to."""

    publish: list[str] = []
    subscribe: list[str] = []


class Policy(msgspec.Struct, forbid_unknown_fields=True):
    """Per-account grants, plus grants every account has (with ``{client}``)."""

    prefix: str
    accounts: dict[str, Grants]
    every_account: Grants = msgspec.field(default_factory=Grants)
    version: int = 1

    def _patterns(self, account: str | None, kind: str, clients: Iterable[str]) -> list[str]:
        own = self.accounts.get(account or "")
        pats = list(getattr(own, kind)) if own is not None else []
        for pat in getattr(self.every_account, kind):
            pats += [pat.replace(CLIENT, c) for c in clients] if CLIENT in pat else [pat]
        return pats

    def may_publish(self, account: str | None, topic: str, clients: Iterable[str] = ()) -> bool:
        """True when ``account`` may publish on ``topic``."""
        return any(matches(p, topic) for p in self._patterns(account, "publish", clients))

    def may_read(self, account: str | None, topic: str, clients: Iterable[str] = ()) -> bool:
        """True when ``account`` may receive a message on ``topic``."""
        return any(matches(p, topic) for p in self._patterns(account, "subscribe", clients))

    def may_subscribe(self, account: str | None, prefix: str, clients: Iterable[str] = ()) -> bool:
        """True when every topic starting with ``prefix`` is readable by ``account``."""
        return any(covers(p, prefix) for p in self._patterns(account, "subscribe", clients))


def covers(pattern: str, prefix: str) -> bool:
    """True when each topic that starts with ``prefix`` matches ``pattern`` (a ZeroMQ prefix
    filter stays inside an MQTT filter).

    A prefix equal to a whole topic the pattern matches is admitted too, although ZeroMQ then
    also passes longer topics (``.../faults`` passes ``.../faultsX``): those need a publish
    grant of their own, which the policy does not give.
    """
    levels = pattern.split("/")
    *full, last = prefix.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            return not (prefix.startswith("$") and i == 0)
        if i == len(full):  # the prefix ends inside this level
            rest = levels[i + 1:]
            if level == "+":
                return rest in (["#"], []) and not (i == 0 and last.startswith("$"))
            return last == level and not rest
        if level != "+" and level != full[i]:
            return False
    return False


def account_of(url: str, env: Mapping[str, str] | None = None) -> str | None:
    """The account a client of ``url`` authenticates as (its MQTT username, or the name of its
    ZeroMQ CURVE key), or None on an unsecured bus: there, no identity exists."""
    env = os.environ if env is None else env
    scheme = urlsplit(url).scheme
    if scheme.startswith("mqtt"):
        return env.get("ROBOBUS_MQTT_USERNAME") or None
    if scheme.startswith("zmq") and env.get("ROBOBUS_ZMQ_KEYS"):
        return env.get("ROBOBUS_ZMQ_CLIENT", "client")
    return None


def instructions_topic(url: str, prefix: str, env: Mapping[str, str] | None = None) -> str:
    """Where a client of ``url`` sends instructions: its account's own topic on a secured bus
    (``P/instructions/{account}``, the only one the policy lets it publish on, so the brain's
    rate limit counts the account, not a name the client writes), the shared
    ``P/instructions`` on an unsecured one."""
    return Topics(prefix).instructions_from(account_of(url, env))


def own_instructions(topic: str, url: str, env: Mapping[str, str] | None = None) -> str:
    """``topic`` as a client of ``url`` may publish it: a shared instructions topic (one
    ending in ``/instructions``) becomes its account's own on a secured bus, where the policy
    lets an account instruct nowhere else; any other topic is returned as it is."""
    account = account_of(url, env)
    if account is None or topic.rsplit("/", 1)[-1] != "instructions":
        return topic
    return f"{topic}/{account}"


def load(path: str | Path) -> Policy:
    """Read a ``policy.json``; raises ValueError naming what is wrong."""
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=Policy)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: not a robobus policy: {exc}") from exc


def dump(policy: Policy) -> bytes:
    """``policy.json`` text, indented for people to read and review."""
    return msgspec.json.format(msgspec.json.encode(policy), indent=2) + b"\n"


def mosquitto_acl(policy: Policy) -> str:
    """The Mosquitto ``acl_file`` that grants exactly what ``policy`` grants."""
    lines = ["# generated from policy.json: edit that, then run `robobus secure acl DIR`"]
    for pat in _rw(policy.every_account):
        lines.append(f"pattern {pat[0]} {pat[1].replace(CLIENT, '%c')}")
    for account, grants in policy.accounts.items():
        lines += ["", f"user {account}"]
        lines += [f"topic {access} {pat}" for access, pat in _rw(grants)]
    return "\n".join(lines) + "\n"


def _rw(grants: Grants) -> list[tuple[str, str]]:
    both = [p for p in grants.subscribe if p in grants.publish]
    return ([("readwrite", p) for p in both]
            + [("read", p) for p in grants.subscribe if p not in both]
            + [("write", p) for p in grants.publish if p not in both])
