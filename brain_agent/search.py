"""Goal-directed symbolic search: goals -> a timed DAG of skill calls across the live fleet.

The search is greedy over *macro-operators* built from the skills' declared world changes
(``move``, ``pick``, ``place``, ``handover``): for each concrete want it costs every way the
fleet could reach it (one robot fetching and placing; a pick by one robot and a handover to a
mobile one; bringing an object to a named robot) on the robots' planned timelines, and keeps
the option that finishes soonest. Steps are simulated on a copy of the world with
``World.apply`` as they are chosen, so later wants see earlier effects, and each step waits
only for the previous step of its robot and the last step that touched the same objects:
independent work runs in parallel. Skill names and argument names come from the SkillSpecs,
never from this code. Cost: O(wants x robots) arithmetic, no blind search; with ``prune`` (the
default) each want costs only the robots whose lower-bound finish can beat the best found
(:mod:`robobus.brain_agent.prune`), and robot timelines are built only for those
(:mod:`robobus.brain_agent.fleet_index`): the same plan, at 10,000 robots a few ms per want.
The ways through a handover are costed in :mod:`robobus.brain_agent.handover`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from robobus.brain_agent import handover
from robobus.brain_agent import prune as bound
from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import PlanInvalid, PlanningError
from robobus.brain_agent.fleet_index import BotTable, FleetIndex
from robobus.brain_agent.goals import GoalSet
from robobus.brain_agent.prune import nearest, soonest
from robobus.brain_agent.resolve import Want, resolve_goals
from robobus.brain_agent.simworld import sim_copy
from robobus.brain_agent.timeline import DEFAULT_DURATION_S, Bot, Option, skill_args
from robobus.schemas.messages import Plan, PlanStep
from robobus.schemas.world import ChangeOp, World, WorldChange, WorldConflict

_HANDOVER_CANDIDATES = 3


@dataclass(slots=True)
class Sharing:
    """What the scheduler knows about objects in robots' hands (issue 15, item 5).

    ``released``: held objects a plan may put down to free a hand (left in hand by a preempted,
    cancelled or failed task, or by a lower-priority task this one would preempt); ``None``
    (a plan made outside a brain) lets it put down any object no goal asks for. Any other held
    object is *kept*: a task left it in that hand on purpose ("bender, pick up the red sock").
    ``allow_kept`` is the last resort, when no plan keeps them; ``put_down`` then lists the
    ``(robot, object)`` pairs of kept objects the plan puts down, for the task's status.
    """

    released: frozenset[str] | None = None
    allow_kept: bool = False
    put_down: list[tuple[str, str]] = field(default_factory=list)

    def may_put_down(self, obj: str, *, kept: bool) -> bool:
        """``kept=False`` asks for a released object only; ``True`` also for a kept one."""
        if self.released is None or obj in self.released:
            return True
        return kept and self.allow_kept


class Search:
    """Greedy, cost-driven construction of a plan on simulated robot timelines."""

    def __init__(self, ctx: PlanContext, *, naive: bool = False, prune: bool = True,
                 sharing: Sharing | None = None, explain: bool = True) -> None:
        """``prune=False`` costs every robot for every want (the reference the pruned search is
        tested against); ``naive`` implies it. ``sharing``: which held objects may be put down."""
        self.ctx = ctx
        self.sharing = sharing or Sharing()
        self.freed: list[tuple[str, str]] = []  # kept objects this plan puts down
        self.naive = naive
        self.prune = prune and not naive
        #: whether a refusal says why (:meth:`why_not`); a caller that drops it says False
        self.explain = explain
        self.world: World = sim_copy(ctx.world)
        self.index = FleetIndex(ctx)
        self.bots = BotTable(self.index)
        self.touched: set[str] = set()  # robots whose timelines moved: their bounds are stale
        self.steps: list[PlanStep] = []
        self.end: dict[str, float] = {}
        self.last_touch: dict[str, str] = {}
        self.wanted: set[str] = set()

    # -- timing helpers ------------------------------------------------------------------
    def travel(self, bot: Bot, frm: str | None, to: str | None, pos: tuple[float, float]) -> float:
        if to is None or frm == to:
            return 0.0
        dest = self.world.places[to].position
        return math.hypot(pos[0] - dest[0], pos[1] - dest[1]) / bot.speed

    def between(self, bot: Bot, a: str, b: str) -> float:
        return self.travel(bot, a, b, self.world.places[a].position)

    def ready(self, *names: str | None) -> float:
        return max((self.end[s] for n in names if n and (s := self.last_touch.get(n))), default=0.0)

    # -- committing steps ----------------------------------------------------------------
    def add(self, bot: Bot, change: ChangeOp, obj: str | None, target: str | None,
            extra: tuple[Bot, ...] = ()) -> str:
        spec = bot.skills[change]
        deps = {d for d in (bot.last, *(b.last for b in extra)) if d}
        for name in (obj, target, self.world.objects[obj].location if obj in self.world.objects else None):
            if name and name in self.last_touch:
                deps.add(self.last_touch[name])
        start = max([bot.t, *(b.t for b in extra), *(self.end[d] for d in deps)])
        dur = self.travel(bot, bot.place, target, bot.pos) if change == "move" else bot.dur(change)
        sid = f"s{len(self.steps) + 1}"
        try:
            self.world.apply(WorldChange(change, robot=bot.name, object=obj, target=target))
        except WorldConflict as exc:
            raise PlanningError(f"step {sid} ({bot.name} {spec.name}) would fail: {exc.reason}",
                                exc.code) from exc
        self.steps.append(PlanStep(sid, bot.name, spec.name, skill_args(spec, obj, target),
                                   sorted(deps, key=lambda s: int(s[1:])), round(dur, 3)))
        self.end[sid] = start + dur
        for b in (bot, *extra):
            b.t, b.last = start + dur, sid
            self.touched.add(b.name)
        self._track(bot, change, obj, target, extra, sid)
        return sid

    def _track(self, bot: Bot, change: str, obj: str | None, target: str | None,
               extra: tuple[Bot, ...], sid: str) -> None:
        if change == "move" and target is not None:
            bot.place, bot.pos = target, self.world.places[target].position
        elif change == "pick" and obj:
            bot.holding.append(obj)
        elif change in ("place", "handover") and obj:
            bot.holding.remove(obj)
            if change == "handover" and extra:
                extra[0].holding.append(obj)
        for name in (obj, target):
            if name and name in self.world.objects:
                self.last_touch[name] = sid

    def spare(self, bot: Bot) -> str | None:
        """A held object no want needs, which the robot may put down to free a hand: a released
        one first, a kept one only as the last resort (:class:`Sharing`)."""
        if not bot.can("place") or bot.place is None:
            return None
        free = [o for o in bot.holding if o not in self.wanted]
        may = self.sharing.may_put_down
        return next((o for o in free if may(o, kept=False)),
                    next((o for o in free if may(o, kept=True)), None))

    def free_cost(self, bot: Bot) -> float | None:
        """Time to get a free hand: 0, one put-down, or None (impossible)."""
        if bot.hand_free():
            return 0.0
        return bot.dur("place") if self.spare(bot) is not None else None

    def free_hand(self, bot: Bot) -> None:
        """Put down a held object nobody asked for (left over from a preempted task)."""
        if not bot.hand_free():
            obj = self.spare(bot)
            if obj is not None and not self.sharing.may_put_down(obj, kept=False):
                self.freed.append((bot.name, obj))
            self.add(bot, "place", obj, bot.place)

    def go(self, bot: Bot, place: str | None) -> None:
        if place is not None and place != bot.place:
            self.add(bot, "move", None, place)

    # -- the search ----------------------------------------------------------------------
    def run(self, wants: list[Want]) -> list[PlanStep]:
        from robobus.brain_agent.batching import batch_trip

        self.wanted = {n for w in wants for n in (w.subject, w.target) if n}
        pending = list(wants)
        while pending:
            want = pending.pop(0)
            if self.satisfied(want):
                continue
            covered = None if self.naive else batch_trip(self, want, pending)
            if covered:
                pending = [w for w in pending if w not in covered]
                continue
            self.commit_best(want)
        return self.steps

    def commit_best(self, want: Want) -> None:
        """Commit the option that reaches ``want`` soonest (the first one when naive)."""
        options = self.options(want)
        if not options:
            raise PlanningError(self.why_not(want) if self.explain else f"cannot reach {want}",
                                "impossible")
        best = options[0] if self.naive else min(options, key=lambda o: o.end)
        best.run()

    def makespan(self) -> float:
        return max(self.end.values(), default=0.0)

    def clone(self) -> Search:
        """An independent copy of the search state, to try an alternative on."""
        other = Search.__new__(Search)
        other.ctx, other.naive, other.wanted = self.ctx, self.naive, self.wanted
        other.explain = self.explain
        other.sharing, other.freed = self.sharing, list(self.freed)
        other.prune, other.index, other.touched = self.prune, self.index, set(self.touched)
        other.world = sim_copy(self.world)
        other.bots = BotTable(self.index, {n: dataclasses.replace(b, holding=list(b.holding))
                                           for n, b in self.bots.built.items()})
        other.steps, other.end = list(self.steps), dict(self.end)
        other.last_touch = dict(self.last_touch)
        return other

    def satisfied(self, want: Want) -> bool:
        w = self.world
        if want.kind == "robot_at":
            return w.robots[want.subject].place == want.target
        if want.kind == "held":
            holder = w.holder(want.subject)
            return holder is not None and want.target in (None, holder)
        obj = w.objects[want.subject]
        if obj.location == want.target:
            return True
        name = obj.location
        while name in w.objects:
            name = w.objects[name].location
        return name == want.target and want.target in w.places

    def options(self, want: Want) -> list[Option]:
        if want.kind == "robot_at":
            return self._goto_options(want)
        if want.kind == "held":
            return self._held_options(want)
        return self._deliver_options(want)

    def candidates(self, want: Want) -> list[Bot]:
        if want.robot is not None:
            return [self.bots[want.robot]] if want.robot in self.bots else []
        return list(self.bots.values())

    def _goto_options(self, want: Want) -> list[Option]:
        bot = self.bots.get(want.subject)
        if bot is None or not bot.reaches(want.target):
            return []
        end = bot.t + self.travel(bot, bot.place, want.target, bot.pos)
        return [Option(end, lambda: self.go(bot, want.target))]

    # -- delivering an object to a place or container -----------------------------------
    def _source(self, obj: str) -> tuple[str | None, Bot | None]:
        holder = self.world.holder(obj)
        if holder is not None and holder not in self.bots:
            raise PlanningError(f"{obj!r} is held by {holder!r}, which is offline or unavailable",
                                "held_by_offline")
        return self.world.place_of(obj), self.bots.get(holder) if holder else None

    def _deliver_options(self, want: Want) -> list[Option]:
        obj, target = want.subject, want.target or ""
        if not self.world.objects[obj].graspable:
            raise PlanningError(f"{obj!r} is not graspable", "not_graspable")
        src, holder = self._source(obj)
        dest = target if target in self.world.places else self.world.place_of(target)
        out: list[Option] = []
        if self.prune and holder is None and want.robot is None:
            found = soonest(self, bound.direct_bound(self.index, src, dest),
                            lambda b: self._direct_end(b, obj, src, target, dest, True))
            if found is not None:
                out.append(Option(found[0], partial(self._direct, found[1], obj, src, target, dest)))
        else:
            for bot in ([holder] if holder else self.candidates(want)):
                end = self._direct_end(bot, obj, src, target, dest, holder is None)
                if end is not None:
                    out.append(Option(end, partial(self._direct, bot, obj, src, target, dest)))
        if (want.robot is None or not out) and not handover.handover_loses(self, out, src, dest,
                                                                           holder):
            out.extend(handover.handover_options(self, obj, src, target, dest, holder,
                                                 mobile_givers=not out, involving=want.robot))
        return out

    def _direct_end(self, bot: Bot, obj: str, src: str | None, target: str, dest: str | None,
                    pick: bool) -> float | None:
        if not (bot.can("place") and bot.reaches(dest) and (not pick or bot.can("pick"))):
            return None
        t, place, pos = bot.t, bot.place, bot.pos
        if pick:
            free = self.free_cost(bot)
            if free is None or not bot.reaches(src):
                return None
            t = max(t + free + self.travel(bot, place, src, pos), self.ready(obj)) + bot.dur("pick")
            place = src
            pos = self.world.places[src].position if src else pos
        t += self.travel(bot, place, dest, pos)
        return max(t, self.ready(target)) + bot.dur("place")

    def _direct(self, bot: Bot, obj: str, src: str | None, target: str, dest: str | None) -> None:
        if obj not in bot.holding:
            self.free_hand(bot)
            self.go(bot, src)
            self.add(bot, "pick", obj, None)
        self.go(bot, dest)
        self.add(bot, "place", obj, target)

    def nearest(self, src: str | None, ok: Callable[[Bot], bool],
                mask: Callable[[FleetIndex], np.ndarray], k: int = _HANDOVER_CANDIDATES) -> list[Bot]:
        """The ``k`` robots satisfying ``ok`` that can be at ``src`` first, ties by name;
        ``mask`` is ``ok`` over the fleet's start state (``prune.giver_mask``...)."""
        if self.prune:
            return nearest(self, src, k, ok, mask(self.index))
        return sorted([b for b in self.bots.values() if ok(b)],
                      key=lambda b: b.t + self.travel(b, b.place, src, b.pos))[:k]

    # -- getting an object into a robot's hand ------------------------------------------
    def _held_options(self, want: Want) -> list[Option]:
        obj = want.subject
        src, holder = self._source(obj)
        recv = self.bots.get(want.target) if want.target else None
        if want.target is not None and recv is None:
            return []
        out: list[Option] = []
        if recv is not None and want.robot is None:
            out.extend(handover.give_options(self, obj, src, holder, recv))
        if holder is None and self.prune and recv is None and want.robot is None:
            found = soonest(self, bound.fetch_bound(self.index, src),
                            lambda b: self._fetch_end(b, src, obj))
            if found is not None:
                out.append(Option(found[0], partial(self._fetch, found[1], src, obj)))
        elif holder is None:
            for bot in ([recv] if recv else self.candidates(want)):
                end = self._fetch_end(bot, src, obj)
                if end is not None:
                    out.append(Option(end + (1e-3 if recv else 0.0), partial(self._fetch, bot, src, obj)))
        return out

    def _fetch_end(self, bot: Bot, src: str | None, obj: str) -> float | None:
        free = self.free_cost(bot)
        if not (bot.can("pick") and free is not None and bot.reaches(src)):
            return None
        arrive = bot.t + free + self.travel(bot, bot.place, src, bot.pos)
        return max(arrive, self.ready(obj)) + bot.dur("pick")

    def _fetch(self, bot: Bot, src: str | None, obj: str) -> None:
        self.free_hand(bot)
        self.go(bot, src)
        self.add(bot, "pick", obj, None)
    # -- explaining failure --------------------------------------------------------------
    def why_not(self, want: Want) -> str:
        bots = self.candidates(want)
        named = want.robot is not None
        if not bots:
            who = f"robot {want.robot!r} is offline or unavailable" if named else \
                "no live robot is available"
            return f"cannot reach {want}: {who}"
        if want.kind == "robot_at":
            return f"robot {want.subject!r} cannot go to {want.target!r}: it is fixed or has no move skill"
        src = self.world.place_of(want.subject)
        pickers = [b.name for b in bots if b.can("pick") and b.reaches(src)]
        if not pickers:
            if named:
                return (f"cannot reach {want}: robot {want.robot!r} cannot pick at {src!r} (it "
                        "cannot get there or has no pick skill), and no handover with it is possible")
            return f"cannot reach {want}: no live robot able to pick can reach {src!r}"
        if want.kind == "held":
            return (f"cannot reach {want}: no robot can bring it to {want.target!r} "
                    "(no free hand, or no robot able to hand it over)")
        dest = want.target if want.target in self.world.places else self.world.place_of(want.target or "")
        placers = [b for b in bots if b.can("place") and b.reaches(dest)]
        who = f"robot {want.robot!r}" if named else "no live robot"
        if placers and not any(b.hand_free() for b in placers):
            names = ", ".join(repr(b.name) for b in placers[:5])
            return (f"cannot bring {want.subject!r} from {src!r} to {want.target!r}: the robots that "
                    f"can place at {dest!r} ({names}) have no free hand")
        if named:
            return (f"cannot bring {want.subject!r} from {src!r} to {want.target!r}: {who} cannot "
                    f"place at {dest!r}, and no handover with it is possible")
        return (f"cannot bring {want.subject!r} from {src!r} to {want.target!r}: {who} able to "
                f"place can reach {dest!r}, and no handover to one is possible")


def plan_goals(goals: GoalSet, ctx: PlanContext, *, planner: str = "symbolic", goal_text: str = "",
               naive: bool = False, check: bool = True, prune: bool = True,
               sharing: Sharing | None = None, explain: bool = True) -> Plan:
    """Turn ``goals`` into a validated :class:`Plan` for ``ctx`` (raises BrainError subclasses).

    ``naive=True`` assigns each want to the first capable robot by name (a quality baseline);
    ``prune=False`` costs every robot for every want (the same plan, slower: a cost baseline).
    ``sharing`` says which held objects may be put down; its ``put_down`` gets the kept ones
    the plan puts down (only with ``allow_kept``). ``explain=False``: a refusal for want of a
    robot does not work out why (a caller that drops the reason).
    """
    from robobus.brain_agent.validate import validate

    wants = resolve_goals(goals, ctx)
    search = Search(ctx, naive=naive, prune=prune, sharing=sharing, explain=explain)
    steps = search.run(wants)
    makespan = max(search.end.values(), default=0.0)
    plan = Plan(ctx.task_id, steps, planner=planner, goal=goal_text or ctx.text,
                makespan_s=round(makespan, 3))
    if check and (violations := validate(plan, ctx)):
        raise PlanInvalid(violations)
    if sharing is not None:
        sharing.put_down = list(search.freed)
    return plan


__all__ = ["DEFAULT_DURATION_S", "Bot", "Option", "Search", "Sharing", "plan_goals", "resolve_goals",
           "skill_args"]
