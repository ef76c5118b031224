"""Configuration of the brain agent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robobus.brain_agent.groups import RobotGroup
from robobus.bus.limits import RateLimit


@dataclass(slots=True)
class BrainConfig:
    """Knobs of ``robobus brain``; every field has a working default."""

    #: planner backend name (see ``brain_agent.planners.PLANNERS``) and its options
    planner: str = "symbolic"
    planner_options: dict[str, Any] = field(default_factory=dict)
    #: client name on the bus
    name: str = "brain"
    #: replans after failed skills / dead robots before a task fails
    max_failures: int = 3
    #: extra parse attempts with the previous error as feedback (planners that retry_with_feedback)
    parse_retries: int = 2
    #: brain-side watchdog per step: the skill's timeout_s x scale + margin
    timeout_scale: float = 1.0
    timeout_margin_s: float = 2.0
    #: resend a running step's command when a robot state newer than this (since the last
    #: send) does not list it: the command, or its result, was lost (e.g. a broker restart)
    resend_after_s: float = 1.0
    #: memory agent requests
    query_timeout_s: float = 2.0
    #: how long an instruction waits for the first world snapshot before failing
    world_wait_s: float = 10.0
    #: after a restart, how long to wait for steps dispatched by the previous brain to end
    orphan_wait_s: float = 10.0
    #: resume active tasks from task memory at start
    recover: bool = True
    #: per-sender limit on P/instructions; floods beyond it are refused on P/errors (None: off)
    instruction_rate_limit: RateLimit | None = RateLimit(rate=20, burst=50)
    #: take instructions that ``robobus replay`` republished (ignored by default)
    accept_replayed: bool = False
    #: where "me"/"here"/"我" deliver when an instruction carries no origin (issue 15); None:
    #: such an instruction fails with ``no_destination``
    deliver_to: str | None = None
    #: capacity (issue 16): tasks not yet final (planning, running, queued behind robots);
    #: past it a new instruction is shed at once, ``failed`` with an ``overloaded:`` reason.
    #: Measured (docs/brain.md, Overload): a saturated brain's latency is about
    #: max_pending / its throughput, so 256 gave 6-8 s on the 2-core VM and 64 gives 1.4-3 s
    max_pending: int = 64
    #: ... and instructions waiting in the intake buffer (each waits for those ahead of it)
    max_backlog: int = 64
    #: the robot group this brain leads (issue 16: several brains on one fleet); None: the
    #: whole fleet, on ``P/instructions`` and ``P/brain/status`` (see ``brain_agent/groups.py``)
    group: RobotGroup | None = None
