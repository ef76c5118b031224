"""Multi-object trips: a robot with several free hands carries objects bound for one place.

The greedy search plans one want at a time, so on its own it never lets a two-handed robot
carry two objects in one trip. Before planning a delivery, :func:`batch_trip` looks for other
pending deliveries to the same destination and tries, on copies of the search state, both
"one by one" and "one robot picks several, then places them all"; the trip is kept only when
the whole plan so far finishes sooner with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robobus.brain_agent.errors import PlanningError
from robobus.brain_agent.prune import carrier_mask
from robobus.brain_agent.resolve import Want
from robobus.brain_agent.timeline import Bot

if TYPE_CHECKING:
    from robobus.brain_agent.search import Search

_CARRIERS = 2


def _loose(search: Search, obj: str) -> bool:
    """An object lying at a place (not held, not in a container): free to be picked."""
    o = search.world.objects.get(obj)
    return o is not None and o.graspable and o.location in search.world.places


def _free_hands(bot: Bot) -> int:
    return bot.hands - len(bot.holding)


def batch_trip(search: Search, want: Want, pending: list[Want]) -> list[Want] | None:
    """Commit a multi-object trip covering ``want`` if that finishes sooner; return the wants
    it covered (``want`` included), or None to plan ``want`` alone."""
    if want.kind != "at" or not _loose(search, want.subject):
        return None
    world = search.world
    src = world.place_of(want.subject)
    # only objects lying where this one lies: the common "clear the table" case, and it keeps
    # the extra cost (a few copies of the search state) to instructions that can gain from it
    mates = [w for w in pending if w.kind == "at" and w.target == want.target
             and w.robot == want.robot and _loose(search, w.subject)
             and world.objects[w.subject].location == src]
    if not mates:
        return None
    target = want.target or ""
    dest = target if target in world.places else world.place_of(target)
    carriers = _carriers(search, want, dest, src)
    if not carriers:
        return None
    try:
        alone = search.clone()
        for w in (want, *mates):
            alone.commit_best(w)
    except PlanningError:
        return None
    best: tuple[float, Bot, list[Want]] | None = None
    for bot in carriers:
        group = [want, *_nearest(search, src, mates, _free_hands(bot) - 1)]
        trial = search.clone()
        _trip(trial, trial.bots[bot.name], group, target, dest)
        try:
            for w in mates:
                if w not in group:
                    trial.commit_best(w)
        except PlanningError:
            continue
        if best is None or trial.makespan() < best[0]:
            best = (trial.makespan(), bot, group)
    if best is None or best[0] >= alone.makespan() - 1e-6:
        return None
    _trip(search, search.bots[best[1].name], best[2], target, dest)
    return best[2]


def _carriers(search: Search, want: Want, dest: str | None, src: str | None) -> list[Bot]:
    def ok(b: Bot) -> bool:
        return (_free_hands(b) >= 2 and b.can("pick") and b.can("place") and b.reaches(dest)
                and b.reaches(src))

    if want.robot is None:  # the nearest of the whole fleet, costing only those that can be
        return search.nearest(src, ok, lambda ix: carrier_mask(ix, src, dest), _CARRIERS)
    bots = [search.bots[want.robot]] if want.robot in search.bots else []
    able = [b for b in bots if ok(b)]
    return able[:_CARRIERS]


def _nearest(search: Search, src: str | None, mates: list[Want], k: int) -> list[Want]:
    """Up to ``k`` mates, in instruction order (they all lie at ``src``)."""
    return mates[:k] if k > 0 and src is not None else []


def _trip(search: Search, bot: Bot, group: list[Want], target: str, dest: str | None) -> None:
    """Pick every object of ``group`` in turn, go to ``dest`` once, place them all."""
    for w in group:
        search.go(bot, search.world.place_of(w.subject))
        search.add(bot, "pick", w.subject, None)
    search.go(bot, dest)
    for w in group:
        search.add(bot, "place", w.subject, target)
