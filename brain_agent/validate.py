"""The plan validator shared by every planner backend.

A plan is valid for a :class:`PlanContext` when:

1. step ids are unique and every ``after`` names an existing step;
2. the dependencies form a DAG (no cycle);
3. every robot is registered, alive, not excluded, and has the step's skill;
4. every argument the skill declares is given, and names a known thing of the declared kind
   (object / place / container / robot / kind);
5. simulated forward from the current world in dependency order (ties keep plan order),
   every step's declared preconditions hold and its world change applies cleanly.

An empty plan is valid: it means the goals already hold.
Violations are precise sentences: they are shown to people and fed back to language models.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.simworld import sim_copy
from robobus.schemas.messages import Plan, PlanStep, SkillSpec
from robobus.schemas.world import PREDICATES, World, WorldChange, WorldConflict, ground, parse_literal


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem with a plan: the step it is about (None: the whole plan), a code, a sentence."""

    step: str | None
    code: str
    message: str

    def __str__(self) -> str:
        return f"step {self.step}: {self.message}" if self.step else self.message


def validate(plan: Plan, ctx: PlanContext) -> list[Violation]:
    """Every violation of ``plan`` against ``ctx`` (empty list: the plan is valid)."""
    out = _structure(plan)
    order = _topological(plan, out)
    specs: dict[str, SkillSpec] = {}
    for step in plan.steps:
        spec = _check_step(step, ctx, out)
        if spec is not None:
            specs[step.id] = spec
    if order is not None and not out:
        _simulate(order, specs, sim_copy(ctx.world), out)  # copies what the plan touches
    return out


def _structure(plan: Plan) -> list[Violation]:
    out: list[Violation] = []
    seen: set[str] = set()
    for step in plan.steps:
        if step.id in seen:
            out.append(Violation(step.id, "duplicate_id", f"step id {step.id!r} is used twice"))
        seen.add(step.id)
    for step in plan.steps:
        for dep in step.after:
            if dep not in seen:
                out.append(Violation(step.id, "unknown_dependency",
                                     f"waits for step {dep!r}, which is not in the plan"))
            elif dep == step.id:
                out.append(Violation(step.id, "cycle", "waits for itself"))
    return out


def _topological(plan: Plan, out: list[Violation]) -> list[PlanStep] | None:
    """Kahn's algorithm, stable in plan order; report the steps on a cycle."""
    index = {s.id: s for s in plan.steps}
    indeg = {s.id: len({d for d in s.after if d in index}) for s in plan.steps}
    users: dict[str, list[str]] = {s.id: [] for s in plan.steps}
    for s in plan.steps:
        for d in {d for d in s.after if d in index}:
            users[d].append(s.id)
    pos = {s.id: i for i, s in enumerate(plan.steps)}
    ready = sorted((sid for sid, n in indeg.items() if n == 0), key=pos.__getitem__)
    order: list[PlanStep] = []
    while ready:
        sid = ready.pop(0)
        order.append(index[sid])
        for u in users[sid]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
                ready.sort(key=pos.__getitem__)
    if len(order) < len(index):
        stuck = sorted((sid for sid, n in indeg.items() if n > 0), key=pos.__getitem__)
        out.append(Violation(None, "cycle", f"the dependencies form a cycle through steps "
                                            f"{', '.join(stuck)}"))
        return None
    return order


def _check_step(step: PlanStep, ctx: PlanContext, out: list[Violation]) -> SkillSpec | None:
    robot = step.robot
    if robot not in ctx.fleet:
        live = ", ".join(sorted(ctx.fleet)) or "none"
        out.append(Violation(step.id, "unknown_robot",
                             f"robot {robot!r} is not registered (live robots: {live})"))
        return None
    if not ctx.usable(robot):
        out.append(Violation(step.id, "robot_unavailable", f"robot {robot!r} is offline or unavailable"))
    spec = ctx.skill(robot, step.skill)
    if spec is None:
        have = ", ".join(s.name for s in ctx.fleet[robot].skills) or "none"
        out.append(Violation(step.id, "unknown_skill",
                             f"robot {robot!r} has no skill {step.skill!r} (it has: {have})"))
        return None
    _check_args(step, spec, ctx.world, out)
    return spec


def _check_args(step: PlanStep, spec: SkillSpec, world: World, out: list[Violation]) -> None:
    for arg, kind in spec.param_kinds.items():
        if arg not in step.args:
            out.append(Violation(step.id, "missing_argument",
                                 f"{step.skill} needs argument {arg!r} ({kind})"))
            continue
        value = step.args[arg]
        if not isinstance(value, str) or not _is_kind(world, value, kind):
            out.append(Violation(step.id, "bad_argument",
                                 f"{step.skill} argument {arg}={value!r} is not a known {kind}"))
    for arg in step.args:
        required = spec.args_schema.get("properties") if spec.args_schema else None
        if arg not in spec.param_kinds and (required is not None and arg not in required):
            out.append(Violation(step.id, "unknown_argument",
                                 f"{step.skill} has no argument {arg!r}"))


def _is_kind(world: World, value: str, kind: str) -> bool:
    for k in kind.split("|"):
        if k == "object":
            ok = value in world.objects
        elif k == "place":
            ok = value in world.places
        elif k == "container":
            ok = value in world.objects and world.objects[value].container
        elif k == "robot":
            ok = value in world.robots
        elif k == "kind":
            ok = any(o.kind == value for o in world.objects.values())
        else:
            ok = True
        if ok:
            return True
    return False


@lru_cache(maxsize=4096)
def _literal(literal: str) -> tuple[bool, Any, tuple[str, ...]]:
    """A precondition literal parsed once: (negated, evaluator, argument names)."""
    negated, name, args = parse_literal(literal, {})
    fn = PREDICATES.get(name)
    if fn is None:
        raise WorldConflict(f"unknown predicate {name!r}", "unknown_predicate")
    return negated, fn, tuple(args)


def unmet(world: World, literals: list[str], binds: dict[str, str]) -> list[str]:
    """The literals that do not hold (grounded), like ``World.unmet`` but with cached parsing."""
    out = []
    for lit in literals:
        negated, fn, names = _literal(lit)
        args = [binds.get(a[1:], a) if a.startswith("?") else a for a in names]
        try:
            value = bool(fn(world, *args))
        except (KeyError, TypeError):
            value = False
        if value == negated:
            out.append(ground(lit, binds))
    return out


def bindings_for(step: PlanStep) -> dict[str, str]:
    """Predicate bindings of a step: ``?robot`` plus every argument by name."""
    out = {k: v for k, v in step.args.items() if isinstance(v, str)}
    out["robot"] = step.robot
    return out


def change_for(step: PlanStep, spec: SkillSpec) -> WorldChange | None:
    """The world change a step performs, from its skill's declared ``change`` and param kinds."""
    if spec.change is None:
        return None
    obj = target = None
    for arg, kind in spec.param_kinds.items():
        value = step.args.get(arg)
        if kind == "object":
            obj = value
        elif kind != "kind":
            target = value
    return WorldChange(spec.change, robot=step.robot, object=obj, target=target)  # type: ignore[arg-type]


def _simulate(order: list[PlanStep], specs: dict[str, SkillSpec], world: World,
              out: list[Violation]) -> None:
    for step in order:
        spec = specs[step.id]
        binds = bindings_for(step)
        missing = unmet(world, spec.preconditions, binds)
        if missing:
            out.append(Violation(step.id, "precondition", f"{step.robot} {step.skill}"
                                 f"({_fmt(step.args)}): precondition {', '.join(missing)} does not "
                                 f"hold{_why(world, step, spec)}"))
            return
        change = change_for(step, spec)
        if change is None:
            continue
        try:
            world.apply(change)
        except WorldConflict as exc:
            out.append(Violation(step.id, exc.code, f"{step.robot} {step.skill}({_fmt(step.args)})"
                                 f" cannot happen: {exc.reason}"))
            return


def _why(world: World, step: PlanStep, spec: SkillSpec) -> str:
    change = change_for(step, spec)
    if change is None:
        return ""
    try:
        world.copy().apply(change)
    except WorldConflict as exc:
        return f" ({exc.reason})"
    return ""


def _fmt(args: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items())


def simulate(plan: Plan, ctx: PlanContext) -> World:
    """The world after ``plan`` runs from ``ctx.world`` (for a plan ``validate`` accepts)."""
    out: list[Violation] = []
    order = _topological(plan, out) or []
    world = ctx.world.copy()
    for step in order:
        spec = ctx.skill(step.robot, step.skill)
        change = change_for(step, spec) if spec is not None else None
        if change is not None:
            world.apply(change)
    return world
