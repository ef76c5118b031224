"""robobus skills: the registry (``@skill``), the skill context, and the simulated skills."""

from robobus.skills.context import SkillContext, SkillParams
from robobus.skills.errors import SkillError, SkillFailed, SkillRejected, SkillTimeout, UnknownSkill
from robobus.skills.registry import REGISTRY, SkillDef, SkillRegistry, load_plugins, skill

__all__ = [
    "REGISTRY", "SkillContext", "SkillDef", "SkillError", "SkillFailed", "SkillParams",
    "SkillRegistry", "SkillRejected", "SkillTimeout", "UnknownSkill", "load_plugins", "skill",
]
