"""The brain's error hierarchy: every failure carries a reason a person can read."""

from __future__ import annotations

from collections.abc import Sequence


class BrainError(Exception):
    """Base of every brain error. ``reason`` is human-readable, ``code`` machine-readable."""

    code = "brain"

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class ParseError(BrainError):
    """The instruction could not be understood (unparseable, unknown word or object)."""

    code = "unparseable"


class PlanningError(BrainError):
    """The goals are understood but cannot be reached with the live fleet (impossible goal)."""

    code = "impossible"


class PlanInvalid(BrainError):
    """A plan failed validation; ``violations`` lists every problem found."""

    code = "invalid_plan"

    def __init__(self, violations: Sequence[object]) -> None:
        self.violations = violations
        super().__init__("; ".join(str(v) for v in violations) or "invalid plan")


class UnknownPlanner(BrainError):
    """``--planner`` named a backend that is not in the registry."""

    code = "unknown_planner"
