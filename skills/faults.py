"""Failure injection: scripted ("fail ``pick`` of ``knife`` once") or random with a seed.

Faults come from the robot profile (``faults:``, a list of FaultSpec maps) and at run time
from ``P/robots/{r}/faults``. A spec with ``probability > 0`` fails runs at random, drawn from
its own seeded generator, until replaced; otherwise it fails the next ``times`` matching runs.
A new spec for the same skill and object replaces the old one; ``times: 0`` clears it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from robobus.schemas.messages import FaultSpec

INJECTED = "injected"


@dataclass(slots=True)
class _Armed:
    spec: FaultSpec
    left: int
    rng: random.Random = field(default_factory=random.Random)


class FaultInjector:
    """Decides, per skill run, whether the run fails with reason code ``injected``."""

    def __init__(self, specs: list[FaultSpec] | None = None) -> None:
        self._armed: dict[tuple[str, str | None], _Armed] = {}
        for spec in specs or []:
            self.add(spec)

    def add(self, spec: FaultSpec) -> None:
        """Arm ``spec``, replacing any fault for the same skill and object."""
        key = (spec.skill, spec.object)
        if spec.probability <= 0 and spec.times <= 0:
            self._armed.pop(key, None)
            return
        self._armed[key] = _Armed(spec, spec.times, random.Random(spec.seed))

    def draw(self, skill: str, obj: str | None) -> FaultSpec | None:
        """The fault that fails this run of ``skill`` on ``obj``, or None (consumes one)."""
        keys = [(skill, obj), (skill, None)] if obj is not None else [(skill, None)]
        for key in keys:
            armed = self._armed.get(key)
            if armed is None:
                continue
            if armed.spec.probability > 0:
                if armed.rng.random() < armed.spec.probability:
                    return armed.spec
                continue
            armed.left -= 1
            if armed.left <= 0:
                del self._armed[key]
            return armed.spec
        return None

    def pending(self) -> list[FaultSpec]:
        """The armed faults (for telemetry and tests)."""
        return [a.spec for a in self._armed.values()]
