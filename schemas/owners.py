"""Who reports a refused input on each topic, so that every input is reported once (issue 14).

An input can reach several agents: an instruction reaches the brain, the memory agent (which
records everything) and any ``robobus topic echo``. Each refusal (too large, rate, decode,
schema) is reported on ``P/errors`` by the one agent that owns the topic:

* ``instructions``, ``instructions/{account}`` and what robots report
  (``robots/{robot}/registration``, ``alive``, ``feedback``): the brain, which acts on them;
* ``robots/{robot}/skills/{skill}`` and ``robots/{robot}/faults``: that robot's edge agent;
* everything else (robot state, task statuses, world events and changes, memory requests,
  presences of the brain and memory): the memory agent, which records and checks each message.
  Robot state is the memory agent's because the brain keeps only the latest value per robot: it
  never decodes a state that a newer one replaced in its buffer.

Other agents that decode the same input stay silent about it; observers (``topic echo``, the
launcher, a recorder without views) never report. Without its owner running, a refused input
is only logged by whoever saw it.
"""

from __future__ import annotations

from typing import Literal

Owner = Literal["brain", "edge", "memory", "none"]


def owner(topic: str, prefix: str) -> Owner:
    """The agent that reports refused inputs on ``topic`` (``none``: outside the fleet)."""
    if not topic.startswith(prefix + "/"):
        return "none"
    rest = topic[len(prefix) + 1:]
    parts = rest.split("/")
    if parts[0] == "instructions" and len(parts) <= 2:
        return "brain"  # the shared topic and each account's own (issue 13)
    if len(parts) in (3, 4) and parts[0] == "groups" and parts[2] == "instructions":
        return "brain"  # a robot group's instructions are its brain's (issue 16)
    if len(parts) >= 3 and parts[0] == "robots":
        if parts[2] in ("skills", "faults"):
            return "edge"
        if parts[2] in _ROBOT_REPORTS and len(parts) == 3:
            return "brain"
    return "memory"


_ROBOT_REPORTS = frozenset({"registration", "alive", "feedback"})


def owned_by(agent: Owner, prefix: str) -> OwnsTopic:
    """A ``reports=`` predicate for :meth:`robobus.bus.Bus.subscribe`: true on ``agent``'s
    topics (the memory agent's ``#`` subscription reports only on the topics it owns)."""
    return OwnsTopic(agent, prefix)


class OwnsTopic:
    """Callable ``topic -> bool``: whether ``agent`` owns ``topic`` (see :func:`owner`)."""

    def __init__(self, agent: Owner, prefix: str) -> None:
        self.agent, self.prefix = agent, prefix

    def __call__(self, topic: str) -> bool:
        return owner(topic, self.prefix) == self.agent
