"""The live fleet as arrays, for costing thousands of robots without building a timeline each.

The search needs, per want, the robot that finishes soonest. At 10,000 robots, building every
robot's timeline and costing it cost 100-300 ms a plan (issue 16). Here:

* a :class:`Roster` holds what a robot's registration says (skills by world change, skill
  durations), by name in the search's order; it is rebuilt only when the registrations change;
* a :class:`FleetIndex` holds, for one plan, each robot's place, position, speed, free hands and
  busy time as numpy arrays, plus capability masks, so a lower bound on every robot's finish
  time is a few vector operations; :meth:`FleetIndex.bot` builds a robot's timeline
  (:class:`~robobus.brain_agent.timeline.Bot`) only when the search asks for it;
* :class:`BotTable` is the search's ``bots`` mapping over the index, building timelines on access.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.timeline import Bot, skills_of
from robobus.schemas.messages import RobotRegistration, SkillSpec
from robobus.schemas.world import WorldRobot

#: stands in for a robot registered but not (yet) in the world: never usable
_ABSENT = WorldRobot("", alive=False, speed=1.0, hands=0)
#: the world changes the search plans with
CHANGES = ("move", "pick", "place", "handover")


@dataclass(slots=True)
class Roster:
    """What the registrations say, by robot, in name order (the search's tie-break order)."""

    fleet: dict[str, RobotRegistration]
    names: list[str]
    rows: dict[str, int]
    skills: list[dict[str, SkillSpec]]
    durations: list[dict[str, float]]
    can: dict[str, np.ndarray]  # change -> bool per robot
    dur: dict[str, np.ndarray]  # change -> seconds per robot (1.0 where the robot lacks it)
    #: per robot, the same number for robots with the same world changes and durations: all the
    #: search's costing reads of a registration (:meth:`FleetIndex.twin_rank`)
    kind: np.ndarray


def _build_roster(fleet: dict[str, RobotRegistration]) -> Roster:
    names = sorted(fleet)
    pairs = [skills_of(fleet[n]) for n in names]
    skills = [p[0] for p in pairs]
    durations = [p[1] for p in pairs]
    can = {c: np.fromiter((c in s for s in skills), bool, len(names)) for c in CHANGES}
    dur = {c: np.fromiter((d.get(c, 1.0) for d in durations), float, len(names)) for c in CHANGES}
    kinds: dict[tuple[object, ...], int] = {}
    kind = np.fromiter((kinds.setdefault((*sorted(s), *sorted(d.items())), len(kinds))
                        for s, d in zip(skills, durations, strict=True)), np.int64, len(names))
    return Roster(dict(fleet), names, {n: i for i, n in enumerate(names)}, skills, durations, can,
                  dur, kind)


class _RosterCache:
    """The last roster built; a brain plans against one fleet, so one slot is enough."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: Roster | None = None

    def get(self, fleet: dict[str, RobotRegistration]) -> Roster:
        last = self._last
        # dict equality compares the registrations by identity first: O(robots) at C speed
        if last is not None and last.fleet == fleet:
            return last
        roster = _build_roster(fleet)
        with self._lock:
            self._last = roster
        return roster


_ROSTERS = _RosterCache()


class FleetIndex:
    """One plan's view of the usable fleet: arrays by robot (in roster order) and timelines."""

    def __init__(self, ctx: PlanContext) -> None:
        self.ctx = ctx
        self.roster = roster = _ROSTERS.get(ctx.fleet)
        self.names = roster.names
        self.places = {p: i for i, p in enumerate(ctx.world.places)}
        robots, places = ctx.world.robots, self.places
        # one list per field: a comprehension per attribute is the cheapest read at 10,000 robots;
        # a projected world (a queued task's, simworld) is read without copying every robot
        get = getattr(robots, "peek", robots.get)
        self.rows: list[WorldRobot | None] = [get(n) for n in self.names]
        rows = [r if r is not None else _ABSENT for r in self.rows]
        n = len(rows)
        self.usable = np.array([r.alive for r in rows], np.bool_).reshape(n)
        for name in ctx.exclude:
            if (i := self.row(name)) is not None:
                self.usable[i] = False
        xy = np.array([r.position for r in rows], np.float64).reshape(n, 2)
        self.x, self.y = xy[:, 0], xy[:, 1]
        # -1: nowhere (as a query for None); -3: a place the world does not know
        self.place = np.array([-1 if r.place is None else places.get(r.place, -3) for r in rows],
                              np.int64).reshape(n)
        self.t0 = np.zeros(n)
        for name, t in ctx.busy_until.items():
            if (i := self.row(name)) is not None:
                self.t0[i] = float(t)
        self.speed = np.maximum(np.array([r.speed for r in rows], np.float64).reshape(n), 1e-6)
        self.free = np.array([r.hands - len(r.holding) for r in rows], np.int64).reshape(n)
        self.movers = np.array([r.mobile for r in rows], np.bool_).reshape(n) & roster.can["move"]

    # -- names and rows ------------------------------------------------------------------
    def row(self, name: str) -> int | None:
        """The robot's row, or None if it is not registered."""
        return self.roster.rows.get(name)

    def is_usable(self, name: str) -> bool:
        i = self.row(name)
        return i is not None and bool(self.usable[i])

    def bot(self, i: int) -> Bot:
        """Robot ``i``'s timeline at the start of planning (as ``timeline.make_bot``)."""
        r = self.rows[i]
        assert r is not None
        name = self.names[i]
        return Bot(name, float(self.ctx.busy_until.get(name, 0.0)), r.place, r.position,
                   list(r.holding), r.hands, r.mobile, max(r.speed, 1e-6),
                   self.roster.skills[i], self.roster.durations[i])

    def _twin_columns(self) -> tuple[np.ndarray, ...]:
        """What twins share, one array per field: skills and durations, place, position, busy
        time, speed, free hands, moving, usable (:meth:`twins`, :meth:`twin_rank`)."""
        return (self.roster.kind, self.place, self.x, self.y, self.t0, self.speed, self.free,
                self.movers, self.usable)

    def _odd(self, i: int) -> bool:
        """Robot ``i`` is twin to none: at a place the world does not know, absent, or
        holding something."""
        r = self.rows[i]
        return r is None or bool(r.holding) or self.place[i] == -3

    def twins(self, i: int, j: int) -> bool:
        """Whether robots ``i`` and ``j`` are twins: :meth:`twin_rank`'s test for one pair."""
        if self._odd(i) or self._odd(j):
            return False
        return all(c[i] == c[j] for c in self._twin_columns())

    def twin_rank(self, rows: np.ndarray) -> np.ndarray:
        """For each of ``rows`` (ascending), how many of ``rows`` before it are its twins: robots
        whose timelines the search cannot tell apart at the start of planning (same skills and
        durations, place, position, speed, busy time, free hands, usable, holding nothing).
        Untouched twins cost the same for every want, so of a group only the first can win a tie
        by name (issue 16: 1,000 robots made of 333 copies of each demo robot)."""
        odd = np.fromiter((self._odd(i) for i in rows.tolist()), bool, len(rows))
        cols = (np.where(odd, rows + 1, 0), *(c[rows] for c in self._twin_columns()))
        order = np.lexsort((rows, *cols))  # groups together, each in row order
        new = np.ones(len(rows), bool)
        for c in cols:
            s = c[order]
            new[1:] &= s[1:] == s[:-1]
        new[1:] = ~new[1:]  # True where a group starts
        pos = np.arange(len(rows))
        start = np.maximum.accumulate(np.where(new, pos, 0))
        rank = np.empty(len(rows), np.int64)
        rank[order] = pos - start
        return rank

    # -- vectors for lower bounds --------------------------------------------------------
    def place_ix(self, place: str | None) -> int:
        return self.places.get(place, -2) if place is not None else -1

    def others(self, name: str) -> np.ndarray:
        """Mask: every robot but ``name``."""
        out = np.ones(len(self.names), bool)
        if (i := self.row(name)) is not None:
            out[i] = False
        return out

    def reach(self, place: str | None) -> np.ndarray:
        """Mask: robots that can be at ``place`` (``Bot.reaches``)."""
        if place is None:
            return np.zeros(len(self.names), bool)
        return self.movers | (self.place == self.place_ix(place))

    def arrive(self, place: str | None) -> np.ndarray:
        """When each robot can be at ``place``: busy time plus travel (``Search.travel``)."""
        if place is None or place not in self.places:
            return self.t0.copy()
        px, py = self.ctx.world.places[place].position
        trip = np.hypot(self.x - px, self.y - py) / self.speed
        trip[self.place == self.places[place]] = 0.0
        return self.t0 + trip

    def hop(self, a: str | None, b: str | None) -> np.ndarray | float:
        """Travel time from place ``a`` to place ``b`` at each robot's speed (0 if the same)."""
        if a is None or b is None or a == b or a not in self.places or b not in self.places:
            return 0.0
        pa, pb = self.ctx.world.places[a].position, self.ctx.world.places[b].position
        return float(np.hypot(pa[0] - pb[0], pa[1] - pb[1])) / self.speed


class BotTable(Mapping[str, Bot]):
    """The search's robots by name: the usable fleet, each timeline built on first access."""

    def __init__(self, index: FleetIndex, built: dict[str, Bot] | None = None) -> None:
        self.index = index
        self.built: dict[str, Bot] = built if built is not None else {}

    def __getitem__(self, name: str | None) -> Bot:
        if name is None:
            raise KeyError(name)
        bot = self.built.get(name)
        if bot is not None:
            return bot
        i = self.index.row(name)
        if i is None or not self.index.usable[i]:
            raise KeyError(name)
        bot = self.built[name] = self.index.bot(i)
        return bot

    def at(self, i: int) -> Bot:
        """The timeline of the robot in row ``i``."""
        return self[self.index.names[i]]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.built or self.index.is_usable(name))

    def __iter__(self) -> Iterator[str]:
        usable = self.index.usable
        return (n for i, n in enumerate(self.index.names) if usable[i])

    def __len__(self) -> int:
        return int(self.index.usable.sum())
