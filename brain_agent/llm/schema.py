"""The JSON Schema a model answer must match: GoalSet, tightened to the live scene.

The schema starts from ``msgspec.json.schema(GoalSet)`` (one source of truth for the goal
structure) and replaces each free string by an ``enum`` of the scene's names for what that
field may name, so a model can only write objects, kinds, places and robots that exist. The
local backend compiles it into an llguidance grammar (:mod:`brain_agent.llm.constrain`); the
OpenAI-compatible backend sends it as ``response_format``. No torch needed here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from robobus.brain_agent.context import PlanContext
from robobus.brain_agent.goals import GoalSet
from robobus.brain_agent.vocab import build_vocabulary, tokenize

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
#: Words that say some objects are left out: only then may an answer use ``exclude`` (a small
#: model otherwise fills it with every name it may).
EXCLUDING = ("but not", "except", "excluding", "other than", "apart from", "除了", "以外", "不要")
#: A reading is one plain English sentence (ASCII, no quotes or braces), at most 160 characters.
READING_PATTERN = r"^[A-Za-z0-9_ ,.;:'-]{3,160}$"
MAX_COUNT = 9


@dataclass(slots=True)
class SceneNames:
    """The names an instruction may refer to, by category."""

    objects: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    robots: list[str] = field(default_factory=list)
    #: most object references one goal may list (set when narrowed to the mentioned names)
    max_refs: int = MAX_ITEMS
    #: whether a kind reference may leave objects out (only when the text says "but not"...)
    exclusions: bool = False

    @classmethod
    def from_context(cls, ctx: PlanContext) -> SceneNames:
        world = ctx.world
        return cls(objects=sorted(world.objects), kinds=sorted({o.kind for o in world.objects.values()}),
                   places=sorted(world.places),
                   containers=sorted(o.name for o in world.objects.values() if o.container),
                   robots=sorted(set(ctx.fleet) | set(world.robots)))

    def narrowed(self, text: str, ctx: PlanContext) -> SceneNames:
        """The names an English instruction mentions, where it mentions any.

        Small models prefer ``{"kind": ..., "nearest_to": ...}`` even for "the apple"; when the
        text names objects or kinds outright, only those stay in the object and kind enums
        (and a category nobody mentions drops out), so the model chooses the structure and
        the words choose the names. Non-ASCII text (Chinese) is left to the model.
        """
        excluding = any(w in text.lower() for w in EXCLUDING)
        if excluding != self.exclusions:
            return dataclasses.replace(self, exclusions=excluding).narrowed(text, ctx)
        if not text.isascii():
            return self
        found = mentioned(text, ctx)
        objects, kinds = found.get("object", set()), found.get("kind", set())
        if not objects and not kinds:
            return self
        # Each mentioned name or kind is one reference at most (small models otherwise repeat
        # the only name they may write until the array is full).
        return SceneNames(objects=sorted(objects), kinds=sorted(kinds), places=self.places,
                          containers=self.containers, robots=self.robots,
                          max_refs=max(1, min(MAX_ITEMS, len(objects) + len(kinds))),
                          exclusions=excluding)

    def category(self, name: str) -> list[str]:
        if name == "references":
            return sorted({*self.objects, *self.places, *self.robots})
        if name == "holders":
            return sorted({*self.places, *self.containers})
        return list(getattr(self, name))


def mentioned(text: str, ctx: PlanContext) -> dict[str, set[str]]:
    """Entity type -> scene names that ``text`` mentions (longest phrases first).

    A word that names an object and a kind ("the book") counts as the object, as in the
    symbolic parser, unless it is plural ("all books").
    """
    vocab = build_vocabulary(ctx.world, list(ctx.fleet))
    raw = tokenize(text)
    words = [vocab.singular(w) for w in raw]
    found: dict[str, set[str]] = {}
    i = 0
    while i < len(words):
        for n in range(min(vocab.max_len, len(words) - i), 0, -1):
            entities = vocab.lookup(tuple(words[i:i + n]))
            if entities:
                plural = raw[i + n - 1] != words[i + n - 1]
                if not plural and any(e.type == "object" for e in entities):
                    entities = [e for e in entities if e.type != "kind"]
                for ent in entities:
                    found.setdefault(ent.type, set()).add(ent.name)
                i += n
                break
        else:
            i += 1
    return found


def goalset_schema(names: SceneNames | None = None, *, reading: bool = True) -> dict[str, Any]:
    """The JSON Schema a model answer must match; with ``names``, strings become enums.

    ``language`` is left out: the planner detects it from the text, which costs no tokens.
    ``reading`` asks first for the instruction restated in the grammar's plain English (any
    input language), which a small model writes better goals from and which the planner
    checks the goals against (:meth:`ModelPlanner.confirm`).
    """
    schema = copy.deepcopy(msgspec.json.schema(GoalSet))
    defs: dict[str, Any] = schema["$defs"]
    defs["GoalSet"]["properties"].pop("language", None)
    defs["GoalSet"]["properties"]["goals"].update(minItems=1, maxItems=MAX_ITEMS)
    if reading:
        top = defs["GoalSet"]
        top["properties"] = {"reading": {"type": "string", "pattern": READING_PATTERN},
                             **top["properties"]}
        top["required"] = ["reading", "goals"]
    for def_name, definition in defs.items():
        definition.pop("description", None)
        definition["additionalProperties"] = False
        props = definition.get("properties", {})
        for prop in list(props):
            if not _tighten(def_name, prop, props[prop], names):
                del props[prop]
    return schema


def _tighten(def_name: str, prop: str, prop_schema: dict[str, Any],
             names: SceneNames | None) -> bool:
    """Tighten one property in place; False when the property must go (no name fits)."""
    if prop == "count":
        prop_schema.update(minimum=1, maximum=MAX_COUNT)
    elif prop == "objects":
        prop_schema.update(minItems=1, maxItems=names.max_refs if names else MAX_ITEMS)
    elif prop == "task_id":
        prop_schema.update(pattern=r"^[A-Za-z0-9_.:\-]{1,40}$")
    elif prop == "exclude":
        objects = names.objects if names is not None else []
        if names is not None and (not objects or not names.exclusions):
            return False
        prop_schema.clear()
        prop_schema.update(type="array", maxItems=4,
                           items={"enum": objects} if objects else {"type": "string", "maxLength": 60})
        return True
    category = FIELD_NAMES.get((def_name, prop))
    if category is None:
        return True
    values = names.category(category) if names is not None else []
    if names is not None and not values and def_name == "ObjectRef" and prop in ("name", "kind"):
        return False
    prop_schema.clear()
    # Optional fields lose their ``null`` branch: a model should leave them out instead.
    prop_schema.update({"enum": values} if values else {"type": "string", "maxLength": 60})
    return True


def schema_text(names: SceneNames) -> str:
    """The tightened schema as compact JSON (for endpoints that take it as ``response_format``)."""
    return json.dumps(goalset_schema(names), separators=(",", ":"))
