"""Symbolic search and the shared validator, on the demo scene and generated scenes."""

from __future__ import annotations

import random

import pytest

from bench import scenes
from robobus.brain_agent.errors import PlanningError
from robobus.brain_agent.goals import Deliver, GoalSet, GoTo, HandTo, ObjectRef, PickUp
from robobus.brain_agent.planners import PLANNERS, Planner, load_planner, plan_goals, validate
from robobus.brain_agent.planners.symbolic import SymbolicPlanner
from robobus.brain_agent.validate import simulate
from robobus.schemas.messages import Plan, PlanStep, RobotRegistration
from robobus.schemas.world import WorldChange


def plan_text(ctx, text: str) -> Plan:  # noqa: ANN001
    return SymbolicPlanner().plan_sync(text, ctx)


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "inline", "retries"), [
    ("symbolic", True, False), ("llm", False, True), ("openai", False, True)])
async def test_every_backend_declares_what_the_brain_reads(name: str, inline: bool,
                                                          retries: bool) -> None:
    assert set(PLANNERS) == {"symbolic", "llm", "openai"}
    planner = load_planner(name)  # model backends load nothing until used
    assert isinstance(planner, Planner)
    assert (planner.name, planner.inline, planner.retry_with_feedback) == (name, inline, retries)
    if name != "llm":  # the local model's warmup loads weights (tests/brain/test_llm.py)
        await planner.warmup()


def test_demo_plan_reaches_goals_in_parallel() -> None:
    ctx = scenes.demo()
    plan = plan_text(ctx, "Bring the fruit nearest the cup and a fruit knife to the office desk")
    assert validate(plan, ctx) == []
    world = simulate(plan, ctx)
    assert world.place_of("apple") == world.place_of("knife") == "officeDesk"
    assert world.place_of("banana") == "kitchenTable"
    robots = {s.robot for s in plan.steps}
    assert len(robots) == 2, "two robots work in parallel"
    serial = sum(s.est_s for s in plan.steps)
    assert plan.makespan_s < serial


def test_each_step_waits_only_for_its_robot_and_objects() -> None:
    ctx = scenes.demo()
    plan = plan_text(ctx, "bring the apple and the knife to the office desk")
    by_id = {s.id: s for s in plan.steps}
    for step in plan.steps:
        for dep in step.after:
            other = by_id[dep]
            shared = set(other.args.values()) & set(step.args.values())
            assert other.robot == step.robot or shared


def test_handover_when_the_carrier_cannot_pick() -> None:
    scene = {"places": {"bench": {"position": [0, 0]}, "dock": {"position": [10, 0]}},
             "objects": {"part": {"kind": "part", "at": "bench"}}}
    robots = [{"name": "arm", "mobile": False, "hands": 1, "speed": 0.0, "start": "bench"},
              {"name": "cart", "mobile": True, "hands": 1, "speed": 2.0, "start": "dock"}]
    ctx = scenes.build(scene, robots)
    reg = ctx.fleet["cart"]
    ctx.fleet["cart"] = RobotRegistration(reg.robot, reg.type, reg.profile,
                                          [s for s in reg.skills if s.name != "pick"])
    plan = plan_goals(GoalSet([Deliver([ObjectRef(name="part")], "dock")]), ctx)
    assert [(s.robot, s.skill) for s in plan.steps] == [
        ("arm", "pick"), ("cart", "navigate"), ("arm", "handover"), ("cart", "navigate"),
        ("cart", "place")]
    assert simulate(plan, ctx).place_of("part") == "dock"


def test_hand_to_a_fixed_robot_brings_it_there() -> None:
    ctx = scenes.demo()
    plan = plan_goals(GoalSet([HandTo(ObjectRef(name="apple"), "agilex")]), ctx)
    assert simulate(plan, ctx).holder("apple") == "agilex"
    assert plan.steps[-1].skill == "handover"


def test_named_robot_is_used() -> None:
    ctx = scenes.demo()
    plan = plan_goals(GoalSet([PickUp(ObjectRef(name="banana"), "realman_1")]), ctx)
    assert {s.robot for s in plan.steps} == {"realman_1"}
    plan = plan_goals(GoalSet([GoTo("g1", "customTable")]), ctx)
    assert [(s.robot, s.skill, s.args) for s in plan.steps] == [
        ("g1", "navigate", {"target": "customTable"})]


def test_dead_and_excluded_robots_are_not_used() -> None:
    ctx = scenes.demo()
    ctx.world.robots["g1"].alive = False
    plan = plan_text(ctx, "bring the apple to the office desk")
    assert "g1" not in {s.robot for s in plan.steps}
    ctx.exclude = frozenset({"realman_1"})
    with pytest.raises(PlanningError, match="kitchenTable"):
        plan_text(ctx, "bring the apple to the office desk")


@pytest.mark.parametrize(("text", "fragment"), [
    ("agilex, go to the office desk", "fixed"),
    ("put the knife on the cup", "not a container"),
    ("bring the basket into the basket", "into itself"),
])
def test_impossible_goals_explain_why(text: str, fragment: str) -> None:
    with pytest.raises(PlanningError, match=fragment):
        plan_text(scenes.demo(), text)


def test_goals_already_holding_give_an_empty_valid_plan() -> None:
    ctx = scenes.demo()
    plan = plan_text(ctx, "put the knife on the custom table")
    assert plan.steps == [] and validate(plan, ctx) == []


@pytest.mark.parametrize("seed", range(6))
def test_generated_scenes_plan_valid_and_reach_goals(seed: int) -> None:
    rng = random.Random(seed)
    scene, robots = scenes.generate(rng.choice([3, 8, 30]), rng.choice([10, 40, 100]), seed=seed)
    ctx = scenes.build(scene, robots)
    objs = rng.sample(sorted(o for o in scene["objects"] if o != "crate"), 3)
    place = rng.choice(sorted(scene["places"]))
    goals = GoalSet([Deliver([ObjectRef(name=o) for o in objs], place)])
    try:
        plan = plan_goals(goals, ctx)
    except PlanningError as exc:  # a random fleet may lack a robot for some place
        assert "cannot" in exc.reason
        return
    assert validate(plan, ctx) == []
    world = simulate(plan, ctx)
    assert all(world.place_of(o) == place for o in objs)
    naive = plan_goals(goals, ctx, naive=True)
    assert plan.makespan_s <= naive.makespan_s + 1e-6


# -- the validator ----------------------------------------------------------------------------
def _plan(*steps: PlanStep) -> Plan:
    return Plan("t", list(steps))


@pytest.mark.parametrize(("steps", "code", "fragment"), [
    ((PlanStep("s1", "ghost", "pick", {"object": "apple"}),), "unknown_robot", "not registered"),
    ((PlanStep("s1", "agilex", "navigate", {"target": "officeDesk"}),), "unknown_skill",
     "has no skill 'navigate'"),
    ((PlanStep("s1", "g1", "pick", {"object": "pear"}),), "bad_argument", "not a known object"),
    ((PlanStep("s1", "g1", "pick", {}),), "missing_argument", "needs argument 'object'"),
    ((PlanStep("s1", "g1", "pick", {"object": "knife"}),), "precondition",
     "colocated(g1, knife)"),
    ((PlanStep("s1", "g1", "pick", {"object": "apple"}, ["s2"]),
      PlanStep("s2", "g1", "navigate", {"target": "officeDesk"}, ["s1"])), "cycle", "cycle"),
    ((PlanStep("s1", "g1", "pick", {"object": "apple"}, ["s9"]),), "unknown_dependency", "s9"),
    ((PlanStep("s1", "g1", "place", {"object": "apple", "target": "kitchenTable"}),),
     "precondition", "holding(g1, apple)"),
])
def test_validator_names_each_violation(steps: tuple[PlanStep, ...], code: str, fragment: str) -> None:
    violations = validate(_plan(*steps), scenes.demo())
    assert any(v.code == code and fragment in str(v) for v in violations), violations


def test_validator_rejects_dead_robot_and_orders_by_dependencies() -> None:
    ctx = scenes.demo()
    ctx.world.robots["g1"].alive = False
    assert [v.code for v in validate(_plan(PlanStep("s1", "g1", "pick", {"object": "apple"})), ctx)] \
        == ["robot_unavailable"]
    ok = _plan(PlanStep("s2", "realman_1", "place", {"object": "knife", "target": "basket"}, ["s1"]),
               PlanStep("s1", "realman_1", "pick", {"object": "knife"}))
    assert validate(ok, scenes.demo()) == []


def test_a_full_handed_robot_puts_down_what_nobody_asked_for() -> None:
    ctx = scenes.demo()
    ctx.world.apply(WorldChange("pick", robot="realman_1", object="basket"))
    plan = plan_goals(GoalSet([PickUp(ObjectRef(name="knife"), "realman_1")]), ctx)
    assert [(s.skill, s.args) for s in plan.steps] == [
        ("place", {"object": "basket", "target": "customTable"}), ("pick", {"object": "knife"})]
    assert validate(plan, ctx) == []


def test_a_two_handed_robot_carries_two_objects_in_one_trip() -> None:
    scene = {"places": {"table": {"position": [0, 0]}, "sink": {"position": [8, 0]}},
             "objects": {"cupA": {"kind": "cup", "at": "table"}, "cupB": {"kind": "cup", "at": "table"}}}
    robots = [{"name": "duo", "mobile": True, "hands": 2, "speed": 1.0, "start": "table"}]
    ctx = scenes.build(scene, robots)
    plan = plan_text(ctx, "bring all cups on the table to the sink")
    assert [s.skill for s in plan.steps].count("navigate") == 1
    assert validate(plan, ctx) == []
    assert all(simulate(plan, ctx).place_of(c) == "sink" for c in ("cupA", "cupB"))
    naive = plan_goals(GoalSet([Deliver([ObjectRef(kind="cup", all_at="table", count=0)], "sink")]),
                       ctx, naive=True)
    assert plan.makespan_s < naive.makespan_s


def test_a_named_robot_is_never_replaced_by_others() -> None:
    """'agilex, bring X to Y' is agilex's work: when agilex cannot do it (fixed at another
    table), the plan is refused with a reason naming it, never handed to other robots."""
    from bench import scenes
    from robobus.brain_agent.planners.symbolic import SymbolicPlanner

    ctx, planner = scenes.demo(), SymbolicPlanner()
    with pytest.raises(PlanningError, match="robot 'agilex' cannot pick at 'kitchenTable'"):
        planner.plan_sync("agilex, bring the apple to the office desk", ctx)
    plan = planner.plan_sync("agilex, put the knife in the basket", ctx)
    assert {s.robot for s in plan.steps} == {"agilex"}, plan.steps
    plan = planner.plan_sync("g1, bring the apple to the office desk", ctx)
    assert {s.robot for s in plan.steps} == {"g1"}, plan.steps


def test_skill_durations_from_the_profiles_decide_who_is_soonest() -> None:
    """Registrations carry each skill's nominal duration from the robot's profile; the planner
    costs with them: of two robots at the apple, the one whose profile says its pick takes
    0.5 s (not 6 s) picks it, and swapping the durations swaps the choice."""
    from bench import scenes
    from robobus.brain_agent.planners.symbolic import SymbolicPlanner
    from robobus.edge_agent.profile import parse_profile

    def spec(name: str, pick_s: float) -> dict:
        prof = parse_profile({"name": name, "type": "test_bot", "start": "kitchenTable",
                              "embodiment": {"mobile": True, "arms": 1, "hands": 1, "speed": 1.0},
                              "skills": {"pick": {"duration_s": pick_s}, "place": {},
                                         "navigate": {}}})
        reg = prof.registration()
        assert reg["durations"] == {"pick": pick_s}
        return {"name": name, "mobile": True, "hands": 1, "speed": 1.0,
                "start": "kitchenTable", "durations": reg["durations"]}

    for slow, fast in (("aa", "bb"), ("bb", "aa")):
        ctx = scenes.build(scenes.DEMO_SCENE, [spec(slow, 6.0), spec(fast, 0.5)])
        plan = SymbolicPlanner().plan_sync("pick up the apple", ctx)
        assert [s.robot for s in plan.steps if s.skill == "pick"] == [fast], plan.steps
