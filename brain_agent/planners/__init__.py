"""The planner interface and the one registry of planner backends.

Contract (every backend, symbolic or language model):

* ``await planner.parse(text, ctx) -> GoalSet``: understand an instruction as goals over the
  scene's vocabulary (object, kind, place and robot names from ``ctx.world`` / ``ctx.fleet``).
  Raise :class:`brain_agent.errors.ParseError` with a readable reason when it cannot.
* ``await planner.plan(text, ctx) -> Plan``: the full pipeline. A backend that produces goals
  should call :func:`plan_goals` (the shared symbolic search) on them; a backend that produces a
  plan directly must pass it through :func:`validate` and retry with ``ctx.feedback`` set to the
  violations' text, a bounded number of times, then raise :class:`PlanInvalid`.
* Plans returned by ``plan`` are always valid for ``ctx`` (``validate(plan, ctx) == []``).
* Errors: :class:`ParseError` (not understood / unknown object), :class:`PlanningError`
  (understood but impossible with the live fleet), :class:`PlanInvalid` (validation failed).
* A planner must not block the event loop for long: heavy work goes to a worker thread.
  ``ctx.world`` is the brain's live cache: never mutate it, and copy it (``ctx.world.copy()``)
  on the event loop before handing it to a thread.
* How the brain uses a backend: ``goals = await planner.parse(text, ctx)``, then
  ``bind_goals`` + :func:`plan_goals` (the same search and validator for every backend). For
  a backend that says ``retry_with_feedback``, any failure of parse, binding, planning or
  validation is appended to ``ctx.feedback`` and ``parse`` is called again (at most
  ``1 + BrainConfig.parse_retries`` times), then the task fails with ``unconfirmed_reading``;
  an error whose ``retryable`` attribute is False fails it at once. Replans reuse the bound
  goals and do not call the backend again.
* A model backend's answer must be consistent with the instruction, not only valid
  (:mod:`brain_agent.llm.planning`: the grammar first, the model's reading confirmed).
* What else the brain reads from a backend is declared on :class:`Planner` (``inline``,
  ``retry_with_feedback``, ``warmup``); every backend implements all of it.

Shared helpers re-exported here: :class:`PlanContext`, :func:`plan_goals`, :func:`validate`,
:class:`Violation`, :func:`resolve_goals` (ObjectRef -> concrete object names).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import ParseError, PlanInvalid, PlanningError, UnknownPlanner
from robobus.brain_agent.goals import GoalSet
from robobus.brain_agent.resolve import bind_goals
from robobus.brain_agent.search import plan_goals, resolve_goals
from robobus.brain_agent.validate import Violation, validate
from robobus.schemas.messages import Plan

__all__ = [
    "PLANNERS", "ParseError", "Plan", "bind_goals", "PlanContext", "PlanInvalid", "Planner", "PlanningError",
    "Violation", "load_planner", "plan_goals", "resolve_goals", "validate",
]


@runtime_checkable
class Planner(Protocol):
    """A planner backend. See the module docstring for the contract."""

    name: str
    #: ``parse`` never waits (no model, no network): once the world is loaded, the brain plans
    #: a new instruction on its intake path instead of in a task of its own
    inline: bool
    #: ``parse`` may answer differently when told why its last answer failed: the brain then
    #: calls it again with the reason in ``ctx.feedback`` (``BrainConfig.parse_retries`` times)
    retry_with_feedback: bool

    async def warmup(self) -> None:
        """Get ready for the first instruction (load a model); return at once if nothing to do.

        The brain runs it in the background at boot: instructions are accepted meanwhile.
        """
        ...

    async def parse(self, text: str, ctx: PlanContext) -> GoalSet:
        """Instruction -> goals."""
        ...

    async def plan(self, text: str, ctx: PlanContext) -> Plan:
        """Instruction -> validated plan (usually ``plan_goals(await self.parse(...), ctx)``)."""
        ...


#: Backend name -> "module:Class". Imported lazily: only the chosen backend's dependencies load.
PLANNERS: dict[str, str] = {
    "symbolic": "robobus.brain_agent.planners.symbolic:SymbolicPlanner",
    "llm": "robobus.brain_agent.planners.llm:LlmPlanner",
    "openai": "robobus.brain_agent.planners.openai:OpenAIPlanner",
}


def load_planner(name: str, **options: Any) -> Planner:
    """Instantiate the backend ``name`` with keyword ``options`` (backend-specific)."""
    if name not in PLANNERS:
        raise UnknownPlanner(f"unknown planner {name!r}; known: {', '.join(sorted(PLANNERS))}")
    module, _, cls = PLANNERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
