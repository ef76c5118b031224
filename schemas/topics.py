"""The public topic contract. Keep it stable: external MQTT clients depend on it."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "robobus"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix (``robobus`` by default)."""

    prefix: str = DEFAULT_PREFIX

    @property
    def instructions(self) -> str:
        """The shared instructions topic: on an unsecured bus, every client's."""
        return f"{self.prefix}/instructions"

    def instructions_from(self, account: str | None = "+") -> str:
        """An account's own instructions topic (``+``: every account's), where a client of a
        secured bus instructs: the broker's ACL or the hub's policy lets each account publish
        on its own only, so the level is an identity the brain can rate-limit by (issue 13).
        ``None`` (an unsecured bus: no identity) is the shared topic."""
        if account is None:
            return self.instructions
        if not account or "/" in account or (account != "+" and ("+" in account or "#" in account)):
            raise ValueError(f"account {account!r} cannot be a topic level")
        return f"{self.prefix}/instructions/{account}"

    @property
    def errors(self) -> str:
        return f"{self.prefix}/errors"

    def task(self, task_id: str = "+") -> str:
        return f"{self.prefix}/tasks/{task_id}"

    def registration(self, robot: str = "+") -> str:
        return f"{self.prefix}/robots/{robot}/registration"

    def alive(self, robot: str = "+") -> str:
        return f"{self.prefix}/robots/{robot}/alive"

    def state(self, robot: str = "+") -> str:
        return f"{self.prefix}/robots/{robot}/state"

    def skill(self, robot: str = "+", skill: str = "+") -> str:
        return f"{self.prefix}/robots/{robot}/skills/{skill}"

    def feedback(self, robot: str = "+") -> str:
        return f"{self.prefix}/robots/{robot}/feedback"

    def faults(self, robot: str = "+") -> str:
        """Fault injection for one edge agent (``FaultSpec``)."""
        return f"{self.prefix}/robots/{robot}/faults"

    # -- memory agent (request/reply and world events) -----------------------------------
    @property
    def memory_query(self) -> str:
        return f"{self.prefix}/memory/query"

    @property
    def memory_status(self) -> str:
        """Retained: the memory agent's presence (``MemoryStatus`` birth or death)."""
        return f"{self.prefix}/memory/status"

    @property
    def world_change(self) -> str:
        """Request/reply: a robot asks the memory agent to apply a world change."""
        return f"{self.prefix}/memory/change"

    @property
    def world_events(self) -> str:
        """Every accepted world change, in order; replaying them rebuilds spatial memory."""
        return f"{self.prefix}/world/events"

    @property
    def scene(self) -> str:
        """Retained: the scene the world was seeded from."""
        return f"{self.prefix}/world/scene"

    # -- brain ---------------------------------------------------------------------------
    @property
    def brain_status(self) -> str:
        """Retained: the brain's ``BrainStatus`` (``ready`` once it takes instructions)."""
        return f"{self.prefix}/brain/status"

    def brain_instance_status(self, instance: str = "+") -> str:
        """Retained: one brain instance's own ``BrainStatus`` (standby ones too)."""
        return f"{self.prefix}/brain/{instance}/status"

    # -- robot groups (issue 16: several brains on one fleet) ------------------------------
    def group_instructions(self, group: str = "+") -> str:
        """Instructions for the brain of one robot group (``robobus brain --group G``)."""
        return f"{self.prefix}/groups/{group}/instructions"

    def group_brain_status(self, group: str = "+") -> str:
        """Retained: the active brain of one robot group (``BrainStatus``), like ``brain_status``
        for the whole fleet."""
        return f"{self.prefix}/groups/{group}/brain/status"

    def robot_of(self, topic: str) -> str | None:
        """The ``{robot}`` level of a robot topic, or None."""
        parts = topic.split("/")
        base = self.prefix.split("/")
        n = len(base)
        if parts[:n] == base and len(parts) > n + 1 and parts[n] == "robots":
            return parts[n + 1]
        return None

    def robot_mismatch(self, topic: str, named: str | None) -> str | None:
        """Why a payload naming robot ``named`` may not travel on ``topic``, or None if it may.

        A robot topic's payload must name that robot, else one robot could speak for another.
        """
        robot = self.robot_of(topic)
        if robot is None or named is None or named == robot:
            return None
        return f"payload names robot {named!r} on robot {robot!r}'s topic"


TOPICS = Topics()
