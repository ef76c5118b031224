"""What every language-model planner shares: the grammar first, then prompt, decode, confirm,
feed back and retry.

A backend only implements :meth:`ModelPlanner.complete` (chat messages + JSON Schema -> the
answer text, blocking). :meth:`ModelPlanner.parse` (issue 15, "use the model only where the
grammar does not reach"):

1. **Grammar first.** The symbolic grammar reads the text. If it does, its goals are checked
   (bound and planned on ``ctx``) and returned: the model is not asked. If it refuses for a
   reason other than not reaching the sentence (``unparseable``, ``unsupported_language``),
   e.g. an unknown relation or object, a negation, an ambiguity, that refusal is final
   (:class:`GrammarRefusal`): a model would only guess.
2. **The model** answers, in a worker thread behind a capacity limiter, under a JSON Schema of
   the scene's names: ``{"reading": <the instruction restated in the grammar's English>,
   "goals": [...]}``.
3. **Confirmation.** The reading is parsed by the grammar and must mean what the goals mean
   (both resolved on the scene); a robot the goals name must be named by the instruction,
   and the reading must name what the instruction names (English words, or Chinese labels
   and lexicon words), no more and no less. Otherwise the answer is rejected with the
   reason (``reading_unparsed``,
   ``reading_mismatch``, ``robot_not_named``, ``reading_adds_names``,
   ``reading_drops_names``).

A rejected answer's reason goes to ``ctx.feedback`` and the model is asked again: by the
brain's scheduler (``BrainConfig.parse_retries``, also after a planning failure or validation
violation), or by :meth:`ModelPlanner.plan` (``max_attempts``). After the last attempt the
failure is ``unconfirmed_reading``: the model's reading could not be confirmed.
"""

from __future__ import annotations

import re
from typing import Any

import anyio
import msgspec
import structlog

from robobus.brain_agent import parser_lex as lex
from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import BrainError, ParseError, PlanInvalid, PlanningError
from robobus.brain_agent.goals import CancelTask, Goal, GoalSet
from robobus.brain_agent.llm import prompts
from robobus.brain_agent.llm.errors import GenerationError, GrammarRefusal
from robobus.brain_agent.llm.schema import SceneNames, goalset_schema, mentioned
from robobus.brain_agent.planners.symbolic import SymbolicPlanner
from robobus.brain_agent.resolve import resolve_goals
from robobus.brain_agent.search import plan_goals
from robobus.schemas.messages import Plan

log = structlog.get_logger(__name__)

#: Errors worth another attempt with the reason fed back; others (a missing model, a dead
#: endpoint, a grammar refusal) would fail the same way again.
RETRYABLE = (ParseError, PlanningError, PlanInvalid, GenerationError)
#: Grammar refusal codes that mean "the grammar does not reach this sentence": the model's turn.
GRAMMAR_MISSES = frozenset({"unparseable", "unsupported_language"})
UNCONFIRMED = "unconfirmed_reading"
_LATIN_ONLY = re.compile(r"[^\x00-\x7f]+")


class Answer(msgspec.Struct):
    """A model's answer: its reading of the instruction and the goals it wrote."""

    goals: list[Goal]
    reading: str = ""


_decoder = msgspec.json.Decoder(Answer)


def decode_answer(raw: str, text: str) -> tuple[GoalSet, str]:
    """(goals, reading) of a model's answer; :class:`GenerationError` says what is wrong."""
    try:
        answer = _decoder.decode(raw.strip().encode())
    except msgspec.DecodeError as exc:
        raise GenerationError(f"the model's answer is not a valid goal list ({exc}): "
                              f"{raw[:200]!r}") from exc
    if not answer.goals:
        raise GenerationError("the model's answer has no goals")
    return GoalSet(answer.goals, prompts.detect_language(text)), answer.reading.strip()  # type: ignore[arg-type]


def decode_goals(raw: str, text: str) -> GoalSet:
    """A model's answer as a :class:`GoalSet` (its reading dropped)."""
    return decode_answer(raw, text)[0]


def schema_for(text: str, ctx: PlanContext) -> dict[str, Any]:
    """The answer schema for ``text`` on ``ctx``: a reading, then goals over the scene's names,
    narrowed to those an English instruction mentions."""
    return goalset_schema(SceneNames.from_context(ctx).narrowed(text, ctx))


def meaning(goals: GoalSet, ctx: PlanContext) -> frozenset[tuple[Any, ...]]:
    """What goals mean on ``ctx``'s scene: cancelled task ids, else the resolved wants."""
    cancels = {("cancel", g.task_id) for g in goals.goals if isinstance(g, CancelTask)}
    if cancels:
        return frozenset(cancels)
    return frozenset((w.kind, w.subject, w.target, w.robot) for w in resolve_goals(goals, ctx))


def _robots(goals: GoalSet) -> set[str]:
    return {r for g in goals.goals if isinstance(r := getattr(g, "robot", None), str)}


class ModelPlanner:
    """Base of the ``llm`` and ``openai`` planners (see the module docstring).

    ``grammar_first=False`` always asks the model (the benchmark measures the model that way);
    its answers are still confirmed against their reading.
    """

    name = "model"
    #: a model thinks for a while (or a remote endpoint answers): never on the intake path
    inline = False
    #: an answer rejected with its reason in the prompt is often right the next time
    retry_with_feedback = True

    def __init__(self, *, max_attempts: int = 3, max_new_tokens: int = 200,
                 retry_temperature: float = 0.7, grammar_first: bool = True) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.max_new_tokens = max_new_tokens
        self.retry_temperature = retry_temperature
        self.grammar_first = grammar_first
        self.grammar = SymbolicPlanner()
        self._limiter = anyio.CapacityLimiter(1)
        self.last_goals: GoalSet | None = None  #: the goals of the last answer accepted
        self.model_calls = 0  #: answers asked of the model so far

    async def warmup(self) -> None:
        """Nothing to load by default (a remote endpoint); a local model overrides this."""

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                 temperature: float = 0.0) -> str:
        """The model's answer to ``messages``, constrained to ``schema``. Blocking."""
        raise NotImplementedError

    async def parse(self, text: str, ctx: PlanContext) -> GoalSet:
        """Instruction -> goals: the grammar's where it reaches, else the model's, confirmed."""
        if not text.strip():
            raise ParseError("empty instruction")
        if self.grammar_first and not ctx.feedback:
            goals = self._by_grammar(text, ctx)
            if goals is not None:
                self.last_goals = goals
                return goals
        goals = await self._by_model(text, ctx)
        self.last_goals = goals
        return goals

    def _by_grammar(self, text: str, ctx: PlanContext) -> GoalSet | None:
        """The grammar's goals (bound and planned once as a check), None where it does not
        reach the sentence; a refusal of any other kind is final."""
        try:
            goals = self.grammar.parse_sync(text, ctx)
        except ParseError as exc:
            if exc.code in GRAMMAR_MISSES:
                return None
            raise GrammarRefusal(exc) from exc
        if not any(isinstance(g, CancelTask) for g in goals.goals):
            try:
                plan_goals(goals, ctx, planner=self.name, goal_text=text)
            except BrainError as exc:
                raise GrammarRefusal(exc) from exc
        log.info("llm_grammar_reading", planner=self.name, task=ctx.task_id)
        return goals

    async def _by_model(self, text: str, ctx: PlanContext) -> GoalSet:
        messages = prompts.messages_for(text, ctx)
        # The first answer is greedy; after a rejection, sampling keeps a small model from
        # writing the same wrong answer again.
        temperature = self.retry_temperature if ctx.feedback else 0.0
        self.model_calls += 1
        raw = await anyio.to_thread.run_sync(self.complete, messages, schema_for(text, ctx),
                                             temperature, limiter=self._limiter,
                                             abandon_on_cancel=True)
        log.info("llm_goals", planner=self.name, task=ctx.task_id, answer=raw[:300])
        goals, reading = decode_answer(raw, text)
        self.confirm(text, goals, reading, ctx)
        return goals

    def confirm(self, text: str, goals: GoalSet, reading: str, ctx: PlanContext) -> None:
        """Raise :class:`ParseError` unless ``goals`` mean what ``reading`` says in the grammar
        and name only robots an English ``text`` names."""
        if not reading:
            raise ParseError("the answer has no reading: restate the instruction in plain "
                             "English first", "reading_unparsed")
        try:
            said = self.grammar.parse_sync(reading, ctx)
        except ParseError as exc:
            raise ParseError(f"your reading {reading!r} is not a sentence I can check: "
                             f"{exc.reason}", "reading_unparsed") from exc
        _same_names(self._names_in(text, ctx), reading, goals, ctx)
        if meaning(said, ctx) != meaning(goals, ctx):
            raise ParseError(f"your goals do not mean what your reading {reading!r} says "
                             f"(it means: {_describe(said, ctx)}; your goals: "
                             f"{_describe(goals, ctx)})", "reading_mismatch")

    def _names_in(self, text: str, ctx: PlanContext) -> dict[str, set[str]]:
        """Entity type -> names an instruction mentions: English words through the scene's
        vocabulary; other scripts through its labels and lexicon (longest match first)."""
        found = mentioned(_plain(_LATIN_ONLY.sub(" ", text)), ctx)
        if text.isascii():
            return found
        vocab = self.grammar.parser_for(ctx).vocab
        i = 0
        while i < len(text):
            for n in range(min(vocab.label_len, len(text) - i), 0, -1):
                ents = vocab.lookup_label(text[i:i + n])
                if ents:
                    if any(e.type == "object" for e in ents):
                        ents = [e for e in ents if e.type != "kind"]
                    for e in ents:
                        found.setdefault(e.type, set()).add(e.name)
                    i += n
                    break
            else:
                i += 1
        return found

    async def plan(self, text: str, ctx: PlanContext) -> Plan:
        """Instruction -> validated plan, retrying with feedback up to ``max_attempts`` times."""
        return plan_goals(await self.read(text, ctx), ctx, planner=self.name, goal_text=text)

    async def read(self, text: str, ctx: PlanContext) -> GoalSet:
        """The goals the brain would act on: :meth:`parse`, then (unless it is a cancel) a plan
        as a check, retrying with feedback up to ``max_attempts`` times; then
        ``unconfirmed_reading``."""
        last: BrainError | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                goals = await self.parse(text, ctx)
                if not any(isinstance(g, CancelTask) for g in goals.goals):
                    plan_goals(goals, ctx, planner=self.name, goal_text=text)
                return goals
            except RETRYABLE as exc:
                if not getattr(exc, "retryable", True):
                    raise
                log.info("llm_rejected", planner=self.name, task=ctx.task_id, attempt=attempt,
                         reason=exc.reason)
                ctx.feedback.append(exc.reason)
                last = exc
        assert last is not None
        raise unconfirmed(last, self.name, self.max_attempts)


def unconfirmed(exc: BrainError, planner: str, attempts: int) -> ParseError:
    """The final failure after ``attempts`` rejected answers: code ``unconfirmed_reading``."""
    return ParseError(f"the {planner} planner's reading could not be confirmed in {attempts} "
                      f"attempt(s); last: {exc.reason}", UNCONFIRMED)


def _same_names(said: dict[str, set[str]], reading: str, goals: GoalSet, ctx: PlanContext) -> None:
    """The reading names what the instruction names (``said``), no more (an object of a kind it
    mentions counts: "the tray" may be read as med_tray; so does the requester's place) and no
    less; the goals name robots only if the instruction does."""
    named = set().union(*said.values()) if said else set()
    origin = getattr(ctx, "origin", None)
    kinds = said.get("kind", set())
    extra = _robots(goals) - said.get("robot", set())
    if extra:
        raise ParseError(f"the instruction does not name robot(s) {sorted(extra)}; leave "
                         "'robot' out unless the instruction names one", "robot_not_named")
    read = mentioned(_plain(reading), ctx)
    read_names = set().union(*read.values()) if read else set()
    added = {n for n in read_names if n not in named and n != origin
             and not (n in ctx.world.objects and ctx.world.objects[n].kind in kinds)}
    if added:
        raise ParseError(f"your reading names {sorted(added)}, which the instruction does not "
                         "mention", "reading_adds_names")
    read_kinds = {ctx.world.objects[n].kind for n in read_names if n in ctx.world.objects}
    dropped = {n for n in named - read_names if not (n in kinds and n in read_kinds)}
    if dropped:
        raise ParseError(f"your reading leaves out {sorted(dropped)}, which the instruction "
                         "names", "reading_drops_names")


def _plain(text: str) -> str:
    """``text`` without its politeness ("can you ..." names no kind ``can``)."""
    return " ".join(w for w in lex.strip_polite(lex.words_of(text)) if w != ";")


def _describe(goals: GoalSet, ctx: PlanContext) -> str:
    try:
        return "; ".join(sorted(" ".join(str(p) for p in w if p) for w in meaning(goals, ctx)))
    except BrainError as exc:
        return f"nothing ({exc.reason})"
