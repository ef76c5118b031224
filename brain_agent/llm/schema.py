"""The JSON Schema a model answer must match: GoalSet, tightened to the live scene.

The schema starts from ``msgspec.json.schema(GoalSet)`` (one source of truth for the goal
structure) and replaces each free string by an ``enum`` of the scene's names for what that
field may name, so a model can only write objects, kinds, places and robots that exist. The
local backend compiles it into an llguidance grammar (:mod:`brain_agent.llm.constrain`); the
OpenAI-compatible backend sends it as ``response_format``. No torch needed here.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from brain_agent.context import PlanContext
from brain_agent.goals import GoalSet

#: (struct, field) -> the name category the field may hold.
FIELD_NAMES: dict[tuple[str, str], str] = {
    ("ObjectRef", "name"): "objects",
    ("ObjectRef", "kind"): "kinds",
    ("ObjectRef", "nearest_to"): "references",
    ("ObjectRef", "all_at"): "holders",
    ("Deliver", "to"): "holders",
    ("Deliver", "robot"): "robots",
    ("GoTo", "robot"): "robots",
    ("GoTo", "place"): "places",
    ("PickUp", "robot"): "robots",
    ("HandTo", "robot"): "robots",
}
MAX_ITEMS = 8
MAX_COUNT = 9
#: Compact JSON: no optional whitespace, so no tokens are spent on it.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}


@dataclass(slots=True)
class SceneNames:
    """The names an instruction may refer to, by category."""

    objects: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    robots: list[str] = field(default_factory=list)

    @classmethod
    def from_context(cls, ctx: PlanContext) -> SceneNames:
        world = ctx.world
        return cls(objects=sorted(world.objects), kinds=sorted({o.kind for o in world.objects.values()}),
                   places=sorted(world.places),
                   containers=sorted(o.name for o in world.objects.values() if o.container),
                   robots=sorted(set(ctx.fleet) | set(world.robots)))

    def category(self, name: str) -> list[str]:
        if name == "references":
            return sorted({*self.objects, *self.places, *self.robots})
        if name == "holders":
            return sorted({*self.places, *self.containers})
        return list(getattr(self, name))


def goalset_schema(names: SceneNames | None = None) -> dict[str, Any]:
    """The JSON Schema a model answer must match; with ``names``, strings become enums.

    ``language`` is left out: the planner detects it from the text, which costs no tokens.
    """
    schema = copy.deepcopy(msgspec.json.schema(GoalSet))
    defs: dict[str, Any] = schema["$defs"]
    defs["GoalSet"]["properties"].pop("language", None)
    defs["GoalSet"]["properties"]["goals"].update(minItems=1, maxItems=MAX_ITEMS)
    for def_name, definition in defs.items():
        definition.pop("description", None)
        definition["additionalProperties"] = False
        for prop, prop_schema in definition.get("properties", {}).items():
            _tighten(def_name, prop, prop_schema, names)
    return schema


def _tighten(def_name: str, prop: str, prop_schema: dict[str, Any], names: SceneNames | None) -> None:
    if prop == "count":
        prop_schema.update(minimum=1, maximum=MAX_COUNT)
    elif prop == "objects":
        prop_schema.update(minItems=1, maxItems=MAX_ITEMS)
    elif prop == "task_id":
        prop_schema.update(pattern=r"^[A-Za-z0-9_.:\-]{1,40}$")
    category = FIELD_NAMES.get((def_name, prop))
    if category is None:
        return
    values = names.category(category) if names is not None else []
    prop_schema.clear()
    # Optional fields lose their ``null`` branch: a model should leave them out instead.
    prop_schema.update({"enum": values} if values else {"type": "string", "maxLength": 60})


def schema_text(names: SceneNames) -> str:
    """The tightened schema as compact JSON (for endpoints that take it as ``response_format``)."""
    return json.dumps(goalset_schema(names), separators=(",", ":"))
