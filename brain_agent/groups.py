"""Robot groups: several brains on one fleet, each leading its own robots (issue 16, item 4).

A group is a name and a selector over robot names (shell patterns, ``fnmatch``). The brain of
group ``G`` (``robobus brain --group G --robots 'pattern,...'``):

* takes instructions on ``P/groups/G/instructions`` only (``P/instructions`` stays the
  ungrouped brain's);
* elects one active brain per group on ``P/groups/G/brain/status`` (standby and takeover as on
  ``P/brain/status``), so two brains of one group never both command;
* plans with, commands and follows only the robots its selector matches: registrations,
  presences, states and feedback of every other robot are dropped before any handler;
* names its tasks ``G-<64 random bits>``, so ids never collide across groups, and resumes
  after a takeover only its own tasks.

Nothing on the wire changes: a robot does not know its group. Selectors of two groups must not
overlap (a robot both match would get commands from both brains); the brains do not check it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase

from robobus.schemas.memory import TaskRecord

#: a group name is one topic level, and short enough to prefix a task id
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class GroupError(ValueError):
    """A group name or selector that cannot be used."""


@dataclass(frozen=True, slots=True)
class RobotGroup:
    """One group: its name and the robot-name patterns it leads."""

    name: str
    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise GroupError(f"group name {self.name[:64]!r}: 1-32 letters, digits, '_' or '-'")
        if not self.patterns or not all(p.strip() for p in self.patterns):
            raise GroupError(f"group {self.name!r} needs robot patterns (--robots 'a_*,b1')")

    @classmethod
    def parse(cls, name: str, robots: str) -> RobotGroup:
        """``robots`` is a comma-separated list of shell patterns over robot names."""
        return cls(name, tuple(p.strip() for p in robots.split(",") if p.strip()))

    def has(self, robot: str) -> bool:
        """Whether ``robot`` belongs to this group."""
        return any(fnmatchcase(robot, p) for p in self.patterns)

    def new_task_id(self) -> str:
        """A task id no other group's brain can make."""
        return f"{self.name}-{secrets.token_hex(8)}"

    def owns(self, rec: TaskRecord) -> bool:
        """Whether a task record is this group's to resume: its plan runs on this group's
        robots, or (not planned yet) its id is one this group made."""
        steps = rec.plan.steps if rec.plan is not None else []
        if steps:
            return all(self.has(s.robot) for s in steps)
        return rec.task_id.startswith(self.name + "-")
