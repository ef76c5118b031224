"""Skill error hierarchy: one base, reason codes as attributes.

Reason codes travel in ``SkillFeedback.reason_code`` so that the brain can react to them
without parsing text: ``unknown_skill``, ``bad_args``, ``precondition``, ``timeout``,
``injected``, ``memory_unavailable``, and the memory agent's conflict codes
(``already_held``, ``not_colocated``, ``no_free_hand`` ...).
"""

from __future__ import annotations


class SkillError(Exception):
    """Base of every skill error; ``code`` is the machine-readable reason code."""

    code = "error"

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class UnknownSkill(SkillError, KeyError):
    """No skill of that name is registered (or the robot's profile does not offer it)."""

    code = "unknown_skill"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown skill {name!r}; this robot offers: {', '.join(known) or 'none'}")
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message
        return self.reason


class SkillRejected(SkillError):
    """The command was refused before it started (bad arguments, wrong robot, duplicate id)."""

    code = "rejected"


class SkillFailed(SkillError):
    """The skill ran and failed: a precondition, a refused world change, an injected fault."""

    code = "failed"


class SkillTimeout(SkillFailed):
    """The skill did not finish within its timeout."""

    code = "timeout"


class SkillDefinitionError(SkillError, TypeError):
    """A ``@skill`` declaration is malformed (missing annotations, duplicate name)."""

    code = "definition"
