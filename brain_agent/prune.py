"""Branch and bound over the fleet: the soonest robot for a want, costing only robots that can win.

For each way of reaching a want the search needs the robot that finishes soonest (ties to the
first by name) or the k robots nearest a place. A robot's finish time is at least its busy time
plus its travel to the object plus its skill durations (every ``max`` in the exact costing only
adds waiting), a bound computed for the whole fleet in a few numpy operations
(:class:`~robobus.brain_agent.fleet_index.FleetIndex`). Robots are then costed exactly in order
of that bound until the bound passes the best finish found: the others cannot be best. Robots
the plan has already moved (``Search.touched``) are always costed exactly, since their bounds
describe where they were. The result is the exhaustive search's, robot for robot
(``tests/brain/test_search_scale.py`` compares the two on random scenes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from robobus.brain_agent.timeline import Bot

if TYPE_CHECKING:
    from robobus.brain_agent.fleet_index import FleetIndex
    from robobus.brain_agent.search import Search

#: robots costed exactly before the rest of the fleet is sorted (most wants stop well before)
_FIRST = 16


def slack(value: float) -> float:
    """Tolerance between the numpy bound and the exact Python sum (rounding, not modelling)."""
    return 1e-9 * max(1.0, abs(value))


def ascending(bound: np.ndarray) -> Iterator[int]:
    """Rows in ascending order of ``bound``, finite ones only: the first few by a partial
    sort, the rest (rarely needed) by a full one."""
    n = len(bound)
    if n == 0:
        return
    k = min(_FIRST, n)
    first = np.argpartition(bound, k - 1)[:k] if n > k else np.arange(n)
    first = first[np.argsort(bound[first], kind="stable")]
    for i in first.tolist():
        if not np.isfinite(bound[i]):
            return
        yield i
    if n == k:
        return
    seen = set(first.tolist())
    for i in np.argsort(bound, kind="stable").tolist():
        if i in seen:
            continue
        if not np.isfinite(bound[i]):
            return
        yield i


def soonest(search: Search, bound: np.ndarray,
            exact: Callable[[Bot], float | None]) -> tuple[float, Bot] | None:
    """The usable robot with the least ``exact`` finish (None: cannot), ties to the first by
    name. ``bound[i]`` is at most robot ``i``'s exact finish, inf where it cannot. ``exact``
    reads only the robot's timeline (never its name), so untouched twins finish alike: a copy
    of the best robot so far is not costed, and after ``_FIRST`` robots only the first of each
    group of twins left in reach is."""
    index, bots, touched = search.index, search.bots, search.touched
    best: tuple[float, int, Bot] | None = None
    for name in touched:
        bot = bots[name]
        end = exact(bot)
        row = index.row(name)
        if end is not None and row is not None and (best is None or (end, row) < best[:2]):
            best = (end, row, bot)
    seen = 0
    lead: int | None = None  # the best robot's row, once an untouched robot is the best
    for i in ascending(bound):
        if best is not None and bound[i] > best[0] + slack(best[0]):
            break
        if index.names[i] in touched:
            continue
        if seen == _FIRST:  # many robots in reach, often copies of one robot: one per group
            return _soonest_twins(search, bound, exact, best)
        seen += 1
        if lead is not None and i > lead and bound[i] == bound[lead] and index.twins(i, lead):
            continue  # a copy of the best robot: it finishes alike and loses the tie by name
        bot = bots.at(i)
        end = exact(bot)
        if end is not None and (best is None or (end, i) < best[:2]):
            best, lead = (end, i, bot), i
    return (best[0], best[2]) if best is not None else None


def _soonest_twins(search: Search, bound: np.ndarray, exact: Callable[[Bot], float | None],
                   best: tuple[float, int, Bot] | None) -> tuple[float, Bot] | None:
    """:func:`soonest` over the robots still in reach, costing the first of each group of
    twins only (the others finish alike and lose the tie by name)."""
    index, bots, touched = search.index, search.bots, search.touched
    reach = np.isfinite(bound) if best is None else bound <= best[0] + slack(best[0])
    for name in touched:
        if (row := index.row(name)) is not None:
            reach[row] = False
    rows = np.nonzero(reach)[0]
    rows = rows[index.twin_rank(rows) == 0]
    for i in rows[np.argsort(bound[rows], kind="stable")].tolist():
        if best is not None and bound[i] > best[0] + slack(best[0]):
            break
        bot = bots.at(i)
        end = exact(bot)
        if end is not None and (best is None or (end, i) < best[:2]):
            best = (end, i, bot)
    return (best[0], best[2]) if best is not None else None


def nearest(search: Search, place: str | None, k: int, ok: Callable[[Bot], bool],
            mask: np.ndarray) -> list[Bot]:
    """The ``k`` robots satisfying ``ok`` that can be at ``place`` first (busy time plus travel),
    ties to the first by name. ``mask`` is ``ok`` as a vector over the fleet's start state."""
    index, bots, touched = search.index, search.bots, search.touched
    ranked: list[tuple[float, int, Bot]] = []
    for name in touched:
        bot = bots[name]
        row = index.row(name)
        if row is not None and ok(bot):
            ranked.append((search.travel(bot, bot.place, place, bot.pos) + bot.t, row, bot))
    key = np.where(mask & index.usable, index.arrive(place), np.inf)
    for name in touched:
        row = index.row(name)
        if row is not None:
            key[row] = np.inf
    finite = int(np.isfinite(key).sum())
    if finite > k:
        kth = float(np.partition(key, k - 1)[k - 1])
        rows = np.nonzero(key <= kth + slack(kth))[0]
    else:
        rows = np.nonzero(np.isfinite(key))[0]
    if len(rows) > _FIRST:  # ties, often copies of one robot: the first k of each group can win
        rows = rows[index.twin_rank(rows) < k]
    for i in rows.tolist():
        bot = bots.at(i)
        if ok(bot):
            ranked.append((bot.t + search.travel(bot, bot.place, place, bot.pos), i, bot))
    ranked.sort(key=lambda r: r[:2])
    return [r[2] for r in ranked[:k]]


# -- lower bounds per way of reaching a want (inf where a robot cannot) ----------------------
def handover_floor(search: Search, src: str | None, dest: str | None) -> float:
    """A lower bound on the finish of every handover of an object nobody holds, from ``src``
    to ``dest`` (``handover.handover_end``), inf if no robot could take part: over the takers,
    the least of (the later of the first giver's pick at ``src`` and this taker's arrival
    there, plus its carry to ``dest`` and place), plus the shortest handover. Givers and takers
    are every usable robot able to play the part (free-handed and reaching ``src``, a taker
    ``dest`` too: a superset of those the search costs); robots the plan has moved are costed
    from their timelines, as in :func:`soonest`."""
    index, bots = search.index, search.bots
    can, dur = index.roster.can, index.roster.dur
    usable = index.usable & (index.free > 0) & index.reach(src)  # a copy: hands free, at src
    touched = [b for n in search.touched if n in bots and (b := bots[n]).hand_free()
               and b.reaches(src)]
    for name in search.touched:
        if (i := index.row(name)) is not None:
            usable[i] = False
    inf = np.inf
    arrive = index.arrive(src)
    at = {b.name: b.t + search.travel(b, b.place, src, b.pos) for b in touched}
    give = min([float(np.where(usable & can["pick"] & can["handover"], arrive + dur["pick"],
                               inf).min(initial=inf))]
               + [at[b.name] + b.dur("pick") for b in touched if b.can("pick")
                  and b.can("handover")])
    hand = min([float(np.where(usable & can["handover"], dur["handover"], inf).min(initial=inf))]
               + [b.dur("handover") for b in touched if b.can("handover")])
    takers = usable & can["place"] & index.reach(dest)
    carry = index.hop(src, dest) + dur["place"]
    take = float(np.where(takers, np.maximum(arrive, give) + carry, inf).min(initial=inf))
    for b in touched:
        if b.can("place") and b.reaches(dest):
            hop = search.between(b, src, dest) if src and dest else 0.0
            take = min(take, max(at[b.name], give) + hop + b.dur("place"))
    return take + hand


def _free_bound(index: FleetIndex) -> np.ndarray:
    """Time to free a hand is 0 or one put-down (``Search.free_cost``)."""
    return np.where(index.free > 0, 0.0, np.minimum(index.roster.dur["place"], 0.0))


def direct_bound(index: FleetIndex, src: str | None, dest: str | None) -> np.ndarray:
    """Fetch from ``src`` and place at ``dest`` (``Search._direct_end`` with a pick)."""
    can, dur = index.roster.can, index.roster.dur
    mask = index.usable & can["pick"] & can["place"] & index.reach(src) & index.reach(dest)
    bound = (index.arrive(src) + _free_bound(index) + dur["pick"] + index.hop(src, dest)
             + dur["place"])
    return np.where(mask, bound, np.inf)


def fetch_bound(index: FleetIndex, src: str | None) -> np.ndarray:
    """Pick up at ``src`` (``Search._fetch_end``)."""
    mask = index.usable & index.roster.can["pick"] & index.reach(src)
    return np.where(mask, index.arrive(src) + _free_bound(index) + index.roster.dur["pick"], np.inf)


def give_bound(index: FleetIndex, src: str | None, recv: str) -> np.ndarray:
    """Pick up at ``src`` and hand to ``recv`` (``handover.give_end``)."""
    can, dur = index.roster.can, index.roster.dur
    mask = index.usable & can["pick"] & can["handover"] & index.reach(src) & index.others(recv)
    return np.where(mask, index.arrive(src) + dur["pick"] + dur["handover"], np.inf)


def giver_mask(index: FleetIndex, src: str | None, mobile: bool) -> np.ndarray:
    """Free-handed robots able to pick and hand over, at ``src`` (or able to get there)."""
    can = index.roster.can
    where = index.place == index.place_ix(src)
    if mobile:
        where = where | index.reach(src)
    return can["pick"] & can["handover"] & (index.free > 0) & where


def taker_mask(index: FleetIndex, src: str | None, dest: str | None, giver: str) -> np.ndarray:
    """Free-handed robots other than ``giver`` able to place, that reach ``src`` and ``dest``."""
    return (index.roster.can["place"] & (index.free > 0) & index.reach(src) & index.reach(dest)
            & index.others(giver))


def carrier_mask(index: FleetIndex, src: str | None, dest: str | None) -> np.ndarray:
    """Robots with two free hands able to pick at ``src`` and place at ``dest`` (trips)."""
    can = index.roster.can
    return ((index.free >= 2) & can["pick"] & can["place"] & index.reach(dest)
            & index.reach(src))
