"""The default planner: the deterministic English grammar plus the shared symbolic search."""

from __future__ import annotations

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.goals import GoalSet
from robobus.brain_agent.parser import SymbolicParser
from robobus.brain_agent.search import plan_goals
from robobus.brain_agent.vocab import Vocabulary, build_vocabulary
from robobus.schemas.messages import Plan


class SymbolicPlanner:
    """Grammar-based parsing over the scene vocabulary, then goal-directed search. No model.

    The vocabulary is rebuilt only when the set of object, place or robot names changes, so a
    plan on a steady world costs one parse plus one search.
    """

    name = "symbolic"
    #: parsing and search never wait on anything, so the brain may plan on its intake path
    inline = True
    #: the grammar is deterministic: the same text fails the same way again
    retry_with_feedback = False

    def __init__(self) -> None:
        self._key: tuple[int, int, int] | None = None
        self._parser: SymbolicParser | None = None

    def parser_for(self, ctx: PlanContext) -> SymbolicParser:
        """The parser for the scene in ``ctx`` (cached by the scene's names)."""
        world = ctx.world
        key = (hash(tuple(world.objects)), hash(tuple(world.places)),
               hash((*ctx.fleet, *world.robots)))
        if key != self._key or self._parser is None:
            self._parser = SymbolicParser(self._vocabulary(ctx))
            self._key = key
        return self._parser

    @staticmethod
    def _vocabulary(ctx: PlanContext) -> Vocabulary:
        return build_vocabulary(ctx.world, list(ctx.fleet))

    async def warmup(self) -> None:
        """Nothing to load: the vocabulary is built from the first plan's scene."""

    async def parse(self, text: str, ctx: PlanContext) -> GoalSet:
        return self.parse_sync(text, ctx)

    def parse_sync(self, text: str, ctx: PlanContext) -> GoalSet:
        """Synchronous :meth:`parse` (the grammar never blocks)."""
        return self.parser_for(ctx).parse(text)

    async def plan(self, text: str, ctx: PlanContext) -> Plan:
        return self.plan_sync(text, ctx)

    def plan_sync(self, text: str, ctx: PlanContext) -> Plan:
        """Synchronous :meth:`plan`: parse, search, validate."""
        return plan_goals(self.parse_sync(text, ctx), ctx, planner=self.name, goal_text=text)
