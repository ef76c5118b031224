"""Whether the dashboard may send instructions: the bus's own access policy decides.

On a secured bus (MQTT credentials or ZeroMQ CURVE keys in the environment) the dashboard acts
as one account, and ``policy.json`` (written by ``robobus secure init``, the same file the
Mosquitto ACL and the hub's guard come from) says whether that account may publish on the
instructions topic. Without a policy to ask, a secured dashboard stays read-only. On an
unsecured bus anyone may instruct, so the dashboard does unless started ``--read-only``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from robobus.bus.policy import account_of, load
from robobus.bus.security import find_policy


@dataclass(frozen=True, slots=True)
class Permission:
    """The dashboard's right to instruct, with the reason shown to the operator."""

    may_instruct: bool
    account: str | None
    reason: str


def policy_path(url: str, explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """The ``policy.json`` to ask: the one given, else the one beside the ZeroMQ keys."""
    if explicit:
        return Path(explicit)
    keys = env.get("ROBOBUS_ZMQ_KEYS")
    if urlsplit(url).scheme.startswith("zmq") and keys:
        return find_policy(keys)
    return None


def instruct_permission(url: str, instructions_topic: str, *, read_only: bool = False,
                        policy: str | None = None, env: Mapping[str, str] | None = None
                        ) -> Permission:
    """Decide once, at start, whether this dashboard may publish on ``instructions_topic``."""
    env = os.environ if env is None else env
    account = account_of(url, env)
    if read_only:
        return Permission(False, account, "started with --read-only")
    if account is None:
        return Permission(True, None, "unsecured bus: anyone may instruct")
    path = policy_path(url, policy, env)
    if path is None:
        return Permission(False, account, f"secured bus as account {account!r} and no policy.json "
                                          "to ask (give --policy DIR/policy.json)")
    try:
        grants = load(path)
    except (OSError, ValueError) as exc:
        return Permission(False, account, f"cannot read the policy: {exc}")
    if grants.may_publish(account, instructions_topic):
        return Permission(True, account, f"{path}: account {account!r} may instruct")
    return Permission(False, account, f"{path}: account {account!r} may not publish on "
                                      f"{instructions_topic}")
