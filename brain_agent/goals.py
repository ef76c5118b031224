"""The goal structure every instruction is parsed into, by any planner front end.

The symbolic parser and the language-model backends both produce :class:`GoalSet`; the
symbolic search then turns goals into a plan, and the shared validator checks it.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class ObjectRef(msgspec.Struct, omit_defaults=True):
    """Which object(s) a goal is about.

    * ``name``: one object by name (``apple``);
    * ``kind``: any object of that kind (``a fruit knife`` -> kind ``knife``);
    * ``kind`` + ``nearest_to``: the ``count`` objects of the kind nearest to a reference;
    * ``kind`` + ``all_at``: every object of the kind at/on a place or container;
    * ``exclude``: objects a kind reference must not pick ("the fruit, but not the banana").
    """

    name: str | None = None
    kind: str | None = None
    nearest_to: str | None = None
    all_at: str | None = None
    count: int = 1
    exclude: list[str] = []


class Deliver(msgspec.Struct, tag="deliver", omit_defaults=True):
    """Bring/put ``objects`` to a place, into a container, or onto a surface ``to``."""

    objects: list[ObjectRef]
    to: str
    robot: str | None = None


class GoTo(msgspec.Struct, tag="goto", omit_defaults=True):
    robot: str
    place: str


class PickUp(msgspec.Struct, tag="pickup", omit_defaults=True):
    object: ObjectRef
    robot: str | None = None


class HandTo(msgspec.Struct, tag="handto", omit_defaults=True):
    object: ObjectRef
    robot: str


class CancelTask(msgspec.Struct, tag="cancel", omit_defaults=True):
    task_id: str


Goal = Deliver | GoTo | PickUp | HandTo | CancelTask


class GoalSet(msgspec.Struct, omit_defaults=True):
    """What an instruction asks for: goals to reach together."""

    goals: list[Goal]
    language: Literal["en", "zh", "other"] = "en"
