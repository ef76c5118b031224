"""Typed robobus messages and the public topic contract."""

from robobus.schemas.codec import decode_as, encode, parse_instruction
from robobus.schemas.messages import (
    MESSAGE_TYPES,
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
)
from robobus.schemas.topics import TOPICS, Topics

__all__ = [
    "MESSAGE_TYPES", "TOPICS", "Alive", "ErrorReport", "FaultSpec", "Instruction", "Plan", "PlanStep", "Pose",
    "RobotRegistration", "RobotState", "SkillCommand", "SkillFeedback", "SkillSpec", "TaskStatus",
    "Topics", "decode_as", "encode", "now_ns", "parse_instruction",
]
