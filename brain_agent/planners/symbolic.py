"""The default planner: the deterministic English and Chinese grammars plus the shared symbolic
search. Text with Chinese characters goes to :mod:`robobus.brain_agent.parser_zh`; "me"/"我" in
either language is the instruction's origin (:mod:`robobus.brain_agent.requester`)."""

from __future__ import annotations

import re

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.goals import GoalSet
from robobus.brain_agent.parser import SymbolicParser
from robobus.brain_agent.parser_zh import ChineseParser, load_lexicon
from robobus.brain_agent.requester import with_requester
from robobus.brain_agent.search import plan_goals
from robobus.brain_agent.vocab import Vocabulary, build_vocabulary
from robobus.schemas.messages import Plan

#: CJK ideographs (not their punctuation: an English sentence with a full-width comma stays
#: English): the sentence is for the Chinese grammar
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


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
        self._zh: ChineseParser | None = None

    def parser_for(self, ctx: PlanContext) -> SymbolicParser:
        """The parser for the scene in ``ctx`` (cached by the scene's names)."""
        world = ctx.world
        key = (hash(tuple(world.objects)), hash(tuple(world.places)),
               hash((*ctx.fleet, *world.robots)))
        if key != self._key or self._parser is None or self._zh is None:
            vocab = self._vocabulary(ctx)
            self._parser, self._zh = SymbolicParser(vocab), ChineseParser(vocab)
            self._key = key
        return self._parser

    def chinese_parser_for(self, ctx: PlanContext) -> ChineseParser:
        """The Chinese grammar over the same (cached) vocabulary."""
        self.parser_for(ctx)
        assert self._zh is not None
        return self._zh

    @staticmethod
    def _vocabulary(ctx: PlanContext) -> Vocabulary:
        labels = {name: [w for w in reg.profile["labels"][:32] if isinstance(w, str)]
                  for name, reg in ctx.fleet.items() if isinstance(reg.profile.get("labels"), list)}
        return build_vocabulary(ctx.world, list(ctx.fleet), lexicon=load_lexicon(),
                                robot_labels=labels)

    async def warmup(self) -> None:
        """Load the Chinese lexicon; the vocabulary is built from the first plan's scene."""
        load_lexicon()

    async def parse(self, text: str, ctx: PlanContext) -> GoalSet:
        return self.parse_sync(text, ctx)

    def parse_sync(self, text: str, ctx: PlanContext) -> GoalSet:
        """Synchronous :meth:`parse` (the grammar never blocks)."""
        if _CJK.search(text):
            goals = self.chinese_parser_for(ctx).parse(text)
        else:
            goals = self.parser_for(ctx).parse(text)
        return with_requester(goals, ctx.origin, ctx.world)

    async def plan(self, text: str, ctx: PlanContext) -> Plan:
        return self.plan_sync(text, ctx)

    def plan_sync(self, text: str, ctx: PlanContext) -> Plan:
        """Synchronous :meth:`plan`: parse, search, validate."""
        return plan_goals(self.parse_sync(text, ctx), ctx, planner=self.name, goal_text=text)
