"""The handover search: ways to reach a want in which one robot hands an object to another.

Beside the direct search (:class:`~robobus.brain_agent.search.Search`: one robot fetches and
places), two ways involve a handover, both costed on the search's simulated timelines:

* a delivery by a giver that picks the object and a taker that receives it and places it
  (:func:`handover_options`), skipped when no handover can finish sooner than the best direct
  option (:func:`handover_loses`);
* an object brought into a named robot's hand (:func:`give_options`).

Each option's ``run`` commits its steps through the search (``Search.add`` / ``Search.go``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

from robobus.brain_agent import prune as bound
from robobus.brain_agent.prune import soonest
from robobus.brain_agent.timeline import Bot, Option

if TYPE_CHECKING:
    from robobus.brain_agent.search import Search


# -- a delivery through a giver and a taker ---------------------------------------------------
def handover_loses(search: Search, out: list[Option], src: str | None, dest: str | None,
                   holder: Bot | None) -> bool:
    """True when no handover can be chosen over ``out``: the first of equally soon options
    is taken, so a handover wins only by finishing strictly sooner, and none finishes
    before :func:`prune.handover_floor`. Its givers and takers are then not costed: on an
    idle fleet that was half of a plan's CPU (issue 16, item 2). The plan is the same."""
    if not (search.prune and out and holder is None):
        return False
    best = min(o.end for o in out)
    floor = bound.handover_floor(search, src, dest)
    return math.isinf(floor) or best <= floor - bound.slack(floor)


def handover_options(search: Search, obj: str, src: str | None, target: str, dest: str | None,
                     holder: Bot | None, *, mobile_givers: bool,
                     involving: str | None = None) -> list[Option]:
    """Pick by a giver, hand over to a taker who places. A giver that must travel to the
    object first never beats that robot placing it itself, so unless nothing else works
    only robots already at the object's place are givers. With ``involving`` (the robot
    the instruction named), that robot is the giver or the taker of every option."""
    def gives(b: Bot) -> bool:
        return b.can("pick") and b.can("handover") and b.hand_free() and (
            b.place == src or (mobile_givers and b.reaches(src)))

    def takes(b: Bot, giver: Bot) -> bool:
        return (b is not giver and b.can("place") and b.hand_free() and b.reaches(src)
                and b.reaches(dest))

    named = search.bots.get(involving) if involving is not None else None
    if involving is not None and named is None:
        return []
    givers = [holder] if holder else search.nearest(
        src, gives, lambda ix: bound.giver_mask(ix, src, mobile_givers))
    if named is not None and holder is None and named not in givers and gives(named):
        givers.append(named)
    out: list[Option] = []
    for giver in givers:
        if not giver.can("handover"):
            continue
        if named is not None and giver is not named:
            takers = [named] if takes(named, giver) else []
        else:
            takers = search.nearest(
                src, lambda b: takes(b, giver),  # noqa: B023
                lambda ix: bound.taker_mask(ix, src, dest, giver.name))  # noqa: B023
        for taker in takers:
            end = handover_end(search, giver, taker, obj, src, target, dest)
            out.append(Option(end, partial(_handover, search, giver, taker, obj, src, target,
                                           dest)))
    return out


def handover_end(search: Search, giver: Bot, taker: Bot, obj: str, src: str | None,
                 target: str, dest: str | None) -> float:
    """When the taker has placed the object the giver picked and handed over."""
    g = giver.t + search.travel(giver, giver.place, src, giver.pos)
    if obj not in giver.holding:
        g = max(g, search.ready(obj)) + giver.dur("pick")
    k = taker.t + search.travel(taker, taker.place, src, taker.pos)
    t = max(g, k) + giver.dur("handover")
    t += search.between(taker, src, dest) if src and dest else 0.0
    return max(t, search.ready(target)) + taker.dur("place")


def _handover(search: Search, giver: Bot, taker: Bot, obj: str, src: str | None, target: str,
              dest: str | None) -> None:
    if obj not in giver.holding:
        search.go(giver, src)
        search.add(giver, "pick", obj, None)
    search.go(taker, src)
    search.add(giver, "handover", obj, taker.name, extra=(taker,))
    search.go(taker, dest)
    search.add(taker, "place", obj, target)


# -- an object brought into a named robot's hand ---------------------------------------------
def give_options(search: Search, obj: str, src: str | None, holder: Bot | None,
                 recv: Bot) -> list[Option]:
    """Ways to get ``obj`` into ``recv``'s hand: its holder, or the soonest robot able to pick
    it, hands it over."""
    if not recv.hand_free():
        return []

    def exact(b: Bot) -> float | None:
        return give_end(search, b, recv, obj, src) if b.can("pick") and b.reaches(src) else None

    if holder is None and search.prune:
        found = soonest(search, bound.give_bound(search.index, src, recv.name), exact)
        ends = [(found[1], found[0])] if found else []
    else:
        givers = [holder] if holder else [b for b in search.bots.values() if b is not recv]
        ends = [(g, e) for g in givers
                if (e := (give_end(search, g, recv, obj, src) if holder else exact(g)))
                is not None]
    return [Option(end, partial(_give, search, g, recv, obj, src, _meet(g, recv, src) or ""))
            for g, end in ends]


def _meet(giver: Bot, recv: Bot, src: str | None) -> str | None:
    return recv.place if giver.reaches(recv.place) else (src if recv.reaches(src) else None)


def give_end(search: Search, giver: Bot, recv: Bot, obj: str, src: str | None) -> float | None:
    """When ``giver`` has handed ``obj`` to ``recv`` (None: it cannot)."""
    meet = _meet(giver, recv, src)
    if giver is recv or not giver.can("handover") or meet is None:
        return None
    g = giver.t + search.travel(giver, giver.place, src, giver.pos)
    if obj not in giver.holding:
        g = max(g, search.ready(obj)) + giver.dur("pick")
    g += search.between(giver, src, meet) if src else 0.0
    k = recv.t + search.travel(recv, recv.place, meet, recv.pos)
    return max(g, k) + giver.dur("handover")


def _give(search: Search, giver: Bot, recv: Bot, obj: str, src: str | None, meet: str) -> None:
    if obj not in giver.holding:
        search.go(giver, src)
        search.add(giver, "pick", obj, None)
    search.go(giver, meet)
    search.go(recv, meet)
    search.add(giver, "handover", obj, recv.name, extra=(recv,))
