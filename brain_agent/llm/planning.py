"""What every language-model planner shares: prompt, decode, validate, feed back, retry.

A backend only implements :meth:`ModelPlanner.complete` (chat messages + JSON Schema -> the
answer text, blocking). This base class runs it in a worker thread behind a capacity limiter,
so the brain's event loop keeps serving while a model thinks, decodes the answer into a
:class:`GoalSet`, hands the goals to the shared symbolic search and validator
(:func:`brain_agent.search.plan_goals`), and on a rejection (unknown object, impossible goal,
validation violation, malformed answer) retries with the reason in the prompt, a bounded
number of times, before failing with the last reason.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import structlog

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.errors import BrainError, ParseError, PlanInvalid, PlanningError
from robobus.brain_agent.goals import GoalSet
from robobus.brain_agent.llm import prompts
from robobus.brain_agent.llm.errors import GenerationError
from robobus.brain_agent.llm.schema import SceneNames, goalset_schema
from robobus.brain_agent.search import plan_goals
from robobus.schemas.messages import Plan

log = structlog.get_logger(__name__)

#: Errors worth another attempt with the reason fed back; others (a missing model, a dead
#: endpoint) would fail the same way again.
RETRYABLE = (ParseError, PlanningError, PlanInvalid, GenerationError)
_decoder = msgspec.json.Decoder(GoalSet)


def decode_goals(raw: str, text: str) -> GoalSet:
    """A model's answer as a :class:`GoalSet`; :class:`GenerationError` says what is wrong."""
    try:
        goals = _decoder.decode(raw.strip().encode())
    except msgspec.DecodeError as exc:
        raise GenerationError(f"the model's answer is not a valid goal list ({exc}): "
                              f"{raw[:200]!r}") from exc
    if not goals.goals:
        raise GenerationError("the model's answer has no goals")
    return msgspec.structs.replace(goals, language=prompts.detect_language(text))


def schema_for(text: str, ctx: PlanContext) -> dict[str, Any]:
    """The answer schema for ``text`` on ``ctx``: the scene's names, narrowed to those an
    English instruction mentions; a translation field first for other languages."""
    return goalset_schema(SceneNames.from_context(ctx).narrowed(text, ctx),
                          translate=not text.isascii())


class ModelPlanner:
    """Base of the ``llm`` and ``openai`` planners (see the module docstring)."""

    name = "model"
    #: a model thinks for a while (or a remote endpoint answers): never on the intake path
    inline = False
    #: an answer rejected with its reason in the prompt is often right the next time
    retry_with_feedback = True

    def __init__(self, *, max_attempts: int = 3, max_new_tokens: int = 200,
                 retry_temperature: float = 0.7) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.max_new_tokens = max_new_tokens
        self.retry_temperature = retry_temperature
        self._limiter = anyio.CapacityLimiter(1)
        self.last_goals: GoalSet | None = None  #: the goals of the last answer decoded

    async def warmup(self) -> None:
        """Nothing to load by default (a remote endpoint); a local model overrides this."""

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                 temperature: float = 0.0) -> str:
        """The model's answer to ``messages``, constrained to ``schema``. Blocking."""
        raise NotImplementedError

    async def parse(self, text: str, ctx: PlanContext) -> GoalSet:
        """Instruction -> goals, by the model, with ``ctx.feedback`` in the prompt."""
        if not text.strip():
            raise ParseError("empty instruction")
        messages = prompts.messages_for(text, ctx)
        schema = schema_for(text, ctx)
        # The first answer is greedy; after a rejection, sampling keeps a small model from
        # writing the same wrong answer again.
        temperature = self.retry_temperature if ctx.feedback else 0.0
        raw = await anyio.to_thread.run_sync(self.complete, messages, schema, temperature,
                                             limiter=self._limiter, abandon_on_cancel=True)
        goals = decode_goals(raw, text)
        self.last_goals = goals
        log.info("llm_goals", planner=self.name, task=ctx.task_id, answer=raw[:300])
        return goals

    async def plan(self, text: str, ctx: PlanContext) -> Plan:
        """Instruction -> validated plan, retrying with feedback up to ``max_attempts`` times."""
        last: BrainError | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                goals = await self.parse(text, ctx)
                return plan_goals(goals, ctx, planner=self.name, goal_text=text)
            except RETRYABLE as exc:
                log.info("llm_rejected", planner=self.name, task=ctx.task_id, attempt=attempt,
                         reason=exc.reason)
                ctx.feedback.append(exc.reason)
                last = exc
        assert last is not None
        raise _exhausted(last, self.name, self.max_attempts)


def _exhausted(exc: BrainError, planner: str, attempts: int) -> BrainError:
    """``exc`` with a reason that says the model gave up, keeping its class and code."""
    exc.reason = f"{planner} planner found no valid plan in {attempts} attempt(s); last: {exc.reason}"
    exc.args = (exc.reason,)
    return exc
