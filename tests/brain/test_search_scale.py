"""The pruned search (issue 16 item 5) plans exactly what costing every robot plans.

``Search(prune=False)`` costs every usable robot for every want, as the search did before the
fleet index; the default search costs only robots whose lower-bound finish can beat the best
found. Both run on random scenes (ties between identical robots, busy, dead and excluded robots,
robots already holding things, every kind of want, named robots) and on every shipped scenario,
and must produce the same steps, the same makespan, or the same refusal.
"""

from __future__ import annotations

import glob
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import scenes
from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import BrainError, PlanningError
from robobus.brain_agent.fleet_index import FleetIndex
from robobus.brain_agent.planners.symbolic import SymbolicPlanner
from robobus.brain_agent.resolve import Want, resolve_goals
from robobus.brain_agent.search import Search, plan_goals
from robobus.brain_agent.timeline import make_bot
from robobus.schemas.messages import PlanStep

ROOT = Path(__file__).resolve().parents[2]


def _outcome(ctx: PlanContext, wants: list[Want], prune: bool) -> tuple[str, object]:
    search = Search(ctx, prune=prune)
    try:
        steps: list[PlanStep] = search.run(wants)
    except PlanningError as exc:
        return "refused", (exc.code, str(exc))
    return "plan", (steps, round(search.makespan(), 9))


def _scene(rng: random.Random, n_robots: int, n_objects: int, ties: bool) -> PlanContext:
    scene, robots = scenes.generate(n_robots, n_objects, seed=rng.randrange(2**31),
                                    n_places=rng.randint(2, 8), fixed_share=rng.random() * 0.6)
    for spec in robots:
        if ties and spec["mobile"]:
            spec["speed"] = 1.0  # identical robots at one place finish together: ties by name
    ctx = scenes.build(scene, robots)
    names = sorted(ctx.fleet)
    for name in rng.sample(names, k=len(names) // 4):
        ctx.busy_until[name] = rng.choice([0.5, 3.0, 12.0])
    ctx.exclude = frozenset(rng.sample(names, k=len(names) // 10))
    for name in rng.sample(names, k=len(names) // 10):
        ctx.world.robots[name].alive = False
    loose = [o for o in ctx.world.objects.values() if o.graspable]
    for name in rng.sample(names, k=min(len(names) // 5, len(loose) // 3)):
        robot, obj = ctx.world.robots[name], loose.pop(rng.randrange(len(loose)))
        if len(robot.holding) < robot.hands:  # already holding it, as after a preempted task
            obj.location, obj.position = name, None
            robot.holding.append(obj.name)
    return ctx


def _wants(rng: random.Random, ctx: PlanContext, n: int) -> list[Want]:
    world = ctx.world
    objects = [o.name for o in world.objects.values() if o.graspable]
    places = list(world.places)
    targets = places[:2] + ["crate"]  # few destinations, so trips share them (batched trips)
    robots = sorted(ctx.fleet)
    out: list[Want] = []
    if rng.random() < 0.3:  # clear one place: several objects there to one target (trips)
        here = rng.choice(places)
        lying = sorted(o for o in objects if world.objects[o].location == here)
        target = rng.choice([t for t in targets if t != here])
        out += [Want("at", o, target) for o in lying[:n + 1] if o != target]
    for _ in range(n):
        named = rng.choice(robots) if rng.random() < 0.15 else None
        kind = rng.choices(["at", "held", "robot_at"], [6, 3, 1])[0]
        if kind == "robot_at":
            out.append(Want("robot_at", rng.choice(robots), rng.choice(places)))
        elif kind == "held":
            recv = rng.choice(robots) if rng.random() < 0.5 else None
            out.append(Want("held", rng.choice(objects), recv, None if recv else named))
        else:
            obj = rng.choice(objects)
            out.append(Want("at", obj, rng.choice([t for t in targets if t != obj]), named))
    return list(dict.fromkeys(out))


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32))
def test_pruned_search_plans_exactly_what_the_exhaustive_search_plans(seed: int) -> None:
    # sizes from the seed, uniformly: hypothesis' own draws favour tiny fleets, and a pruning
    # mistake shows on a crowded scene (it found planted ones in about 1 seed in 60)
    rng = random.Random(seed)
    ctx = _scene(rng, rng.randint(1, 160), rng.randint(4, 60), ties=rng.random() < 0.5)
    wants = _wants(rng, ctx, rng.randint(1, 6))
    assert _outcome(ctx, wants, prune=True) == _outcome(ctx, wants, prune=False)


def test_timelines_from_the_index_are_the_robots_timelines() -> None:
    ctx = _scene(random.Random(3), 300, 40, ties=False)
    index = FleetIndex(ctx)
    usable = [i for i, name in enumerate(index.names) if ctx.usable(name)]
    assert len(usable) > 200
    assert usable == [i for i in range(len(index.names)) if index.usable[i]]
    for i in usable:
        assert index.bot(i) == make_bot(index.names[i], ctx)


def test_every_shipped_instruction_plans_the_same_with_pruning() -> None:
    planner = SymbolicPlanner()
    checked = 0
    for path in sorted(glob.glob(str(ROOT / "scenarios" / "*.yaml"))):
        scene, robots, instructions = scenes.from_scenario(path)
        for inst in instructions:
            ctx = scenes.build(scene, robots)
            ctx.origin = inst.get("origin")
            try:
                wants = resolve_goals(planner.parse_sync(inst["text"], ctx), ctx)
            except BrainError:  # refused before planning (parse, bind): nothing to compare
                continue
            pruned, exhaustive = _outcome(ctx, wants, True), _outcome(ctx, wants, False)
            assert pruned == exhaustive, (path, inst["text"])
            checked += 1
    assert checked >= 10


def test_ten_thousand_robots_plan_what_the_exhaustive_search_plans() -> None:
    scene, robots = scenes.generate(10_000, 1_000, seed=7)
    ctx = scenes.build(scene, robots)
    text = "bring the fruit nearest the bolt1 and a tool to station2"
    goals = SymbolicPlanner().parse_sync(text, ctx)
    wants = resolve_goals(goals, ctx)
    assert _outcome(ctx, wants, True) == _outcome(ctx, wants, False)
    plan = plan_goals(goals, ctx)
    assert plan.steps and plan.makespan_s > 0


def test_copies_of_the_demo_robots_are_costed_once_per_group() -> None:
    """1,000 robots made of 333 copies of each demo robot (bench.brain_cpu --robots 333): every
    copy ties with the others, and the search costs one of each group of twins instead of all
    (issue 16), with the same plan, busy and already-moved copies included."""
    specs = [{**s, "name": f"{s['name']}_{k}"} for k in range(333) for s in scenes.DEMO_ROBOTS]
    ctx = scenes.build(scenes.DEMO_SCENE, specs)
    rng = random.Random(5)
    for name in rng.sample(sorted(ctx.fleet), k=60):
        ctx.busy_until[name] = rng.choice([0.5, 3.0])
    text = "Bring the fruit nearest the cup and a fruit knife to the office desk"
    wants = resolve_goals(SymbolicPlanner().parse_sync(text, ctx), ctx)
    cases = [wants] + [_wants(rng, ctx, 4) for _ in range(4)]
    for case in cases:
        assert _outcome(ctx, case, True) == _outcome(ctx, case, False), case
    search = Search(ctx)
    search.run(wants)
    assert 0 < len(search.bots.built) < 40  # timelines built: the exhaustive search builds 999
