"""Typed robobus messages and the public topic contract."""

from robobus.schemas.codec import decode_as, encode, parse_instruction
from robobus.schemas.contract import MESSAGE_TYPES, message_type
from robobus.schemas.messages import (
    Alive,
    ErrorReport,
    FaultSpec,
    Instruction,
    Plan,
    PlanStep,
    Pose,
    RobotRegistration,
    RobotState,
    SkillCommand,
    SkillFeedback,
    SkillSpec,
    TaskStatus,
    now_ns,
    presence_supersedes,
)
from robobus.schemas.tasks import Refused, is_final, next_status
from robobus.schemas.topics import TOPICS, Topics

__all__ = [
    "MESSAGE_TYPES", "TOPICS", "Alive", "ErrorReport", "FaultSpec", "Instruction", "Plan", "PlanStep", "Pose",
    "Refused", "RobotRegistration", "RobotState", "SkillCommand", "SkillFeedback", "SkillSpec",
    "TaskStatus", "Topics", "decode_as", "encode", "is_final", "message_type", "next_status", "now_ns",
    "parse_instruction", "presence_supersedes",
]
