"""The skill registry: ``@skill("navigate", ...)`` on ``async def navigate(ctx, args) -> Result``.

A skill is an async function taking a :class:`skills.context.SkillContext` and a msgspec
``Struct`` of arguments. The argument type gives the JSON Schema that planners read; the
declared preconditions, effects and ``change`` give the planner model (docs/contracts.md).

Third-party skills come in through the ``robobus.skills`` entry-point group: each entry point
names a module whose import registers its skills with :func:`skill`.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import msgspec
import structlog

from robobus.schemas.messages import SkillSpec
from robobus.skills.errors import SkillDefinitionError, SkillRejected, UnknownSkill

log = structlog.get_logger("skills")

ENTRY_POINT_GROUP = "robobus.skills"
SkillFn = Callable[[Any, Any], Awaitable[Any]]
#: Resources a skill may claim. ``arm`` takes any free arm/hand; ``none`` never waits.
RESOURCES = ("base", "arm", "sensor", "none")


@dataclass(frozen=True, slots=True)
class SkillDef:
    """One registered skill: the function, its typed I/O and its planner model."""

    name: str
    fn: SkillFn
    args_type: type[msgspec.Struct]
    result_type: Any
    timeout_s: float
    resource: str
    preconditions: tuple[str, ...] = ()
    effects: tuple[str, ...] = ()
    param_kinds: Mapping[str, str] = field(default_factory=dict)
    change: str | None = None
    doc: str = ""
    #: the argument/result JSON Schemas as given by the skill's source (an MCP tool's
    #: inputSchema/outputSchema) instead of the ones derived from the Python types
    args_schema: Mapping[str, Any] | None = None
    result_schema: Mapping[str, Any] | None = None
    #: False: ``timeout_s`` is real seconds, not simulated ones (an external server's call)
    scaled: bool = True

    def spec(self, timeout_s: float | None = None) -> SkillSpec:
        """The :class:`SkillSpec` published in a robot's registration."""
        return SkillSpec(
            name=self.name,
            args_schema=(dict(self.args_schema) if self.args_schema is not None
                         else json_schema(self.args_type)),
            result_schema=(dict(self.result_schema) if self.result_schema is not None
                           else json_schema(self.result_type) if self.result_type else {}),
            preconditions=list(self.preconditions),
            effects=list(self.effects),
            param_kinds=dict(self.param_kinds),
            change=self.change,
            resource=self.resource,
            timeout_s=timeout_s if timeout_s is not None else self.timeout_s,
        )

    def parse_args(self, raw: Any) -> msgspec.Struct:
        """Validate ``raw`` (a dict) into the argument struct; raise ``SkillRejected``."""
        try:
            return msgspec.convert(raw, self.args_type, strict=False)
        except msgspec.ValidationError as exc:
            raise SkillRejected(f"bad arguments for {self.name}: {exc}", "bad_args") from exc

    def bindings(self, robot: str, args: msgspec.Struct) -> dict[str, str]:
        """Variable bindings for the predicate language: ``?robot`` plus the string args."""
        out = {k: v for k, v in msgspec.structs.asdict(args).items() if isinstance(v, str)}
        out["robot"] = robot
        return out


def json_schema(type_: Any) -> dict[str, Any]:
    """JSON Schema of ``type_`` with the top-level ``$ref`` inlined."""
    schema = msgspec.json.schema(type_)
    ref = schema.get("$ref", "")
    defs = schema.get("$defs", {})
    name = ref.rsplit("/", 1)[-1]
    if name in defs:
        out = dict(defs[name])
        rest = {k: v for k, v in defs.items() if k != name}
        if rest:
            out["$defs"] = rest
        return out
    return schema


class SkillRegistry:
    """Name -> :class:`SkillDef`. One registry is the single source of truth for skills."""

    def __init__(self) -> None:
        self._skills: dict[str, SkillDef] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def __iter__(self) -> Iterator[SkillDef]:
        return iter(self._skills.values())

    def __len__(self) -> int:
        return len(self._skills)

    def names(self) -> list[str]:
        return sorted(self._skills)

    def get(self, name: str) -> SkillDef:
        """The skill ``name``; raise :class:`UnknownSkill` listing the known ones."""
        try:
            return self._skills[name]
        except KeyError:
            raise UnknownSkill(name, self.names()) from None

    def add(self, sdef: SkillDef) -> SkillDef:
        old = self._skills.get(sdef.name)
        if old is not None and old.fn.__qualname__ != sdef.fn.__qualname__:
            raise SkillDefinitionError(
                f"skill {sdef.name!r} already registered by {old.fn.__module__}.{old.fn.__qualname__}"
            )
        self._skills[sdef.name] = sdef
        return sdef

    def skill(self, name: str, **kwargs: Any) -> Callable[[SkillFn], SkillFn]:
        """Decorator registering ``fn`` in this registry (see :func:`skill`)."""

        def register(fn: SkillFn) -> SkillFn:
            self.add(define(name, fn, **kwargs))
            return fn

        return register


def define(
    name: str,
    fn: SkillFn,
    *,
    timeout: float = 60.0,
    resource: str = "arm",
    preconditions: tuple[str, ...] | list[str] = (),
    effects: tuple[str, ...] | list[str] = (),
    param_kinds: Mapping[str, str] | None = None,
    change: str | None = None,
) -> SkillDef:
    """Build a :class:`SkillDef` from ``fn``'s annotations; raise on malformed declarations."""
    if resource not in RESOURCES:
        raise SkillDefinitionError(f"skill {name!r}: resource {resource!r} not in {RESOURCES}")
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise SkillDefinitionError(f"skill {name!r}: cannot resolve the annotations of "
                                   f"{fn.__qualname__} (define the types at module level): "
                                   f"{exc}") from exc
    params = [p for p in fn.__code__.co_varnames[: fn.__code__.co_argcount]]
    if len(params) != 2 or params[1] not in hints:
        raise SkillDefinitionError(f"skill {name!r}: expected `async def {fn.__name__}(ctx, args: "
                                   "ArgsStruct) -> Result` with an annotated args parameter")
    args_type = hints[params[1]]
    if not (isinstance(args_type, type) and issubclass(args_type, msgspec.Struct)):
        raise SkillDefinitionError(f"skill {name!r}: args type {args_type!r} is not a msgspec Struct")
    result = hints.get("return")
    return SkillDef(
        name=name, fn=fn, args_type=args_type, result_type=None if result is type(None) else result,
        timeout_s=float(timeout), resource=resource, preconditions=tuple(preconditions),
        effects=tuple(effects), param_kinds=dict(param_kinds or {}), change=change,
        doc=(fn.__doc__ or "").strip().split("\n")[0],
    )


#: The process-wide registry that ``@skill`` and the entry points fill.
REGISTRY = SkillRegistry()


def skill(name: str, **kwargs: Any) -> Callable[[SkillFn], SkillFn]:
    """Register a skill in :data:`REGISTRY`.

    ``timeout`` (s, at time scale 1), ``resource`` (``base``, ``arm``, ``sensor``, ``none``),
    ``preconditions`` / ``effects`` (predicate literals over ``?robot`` and the args),
    ``param_kinds`` (what each arg names) and ``change`` (the world-change op it performs).
    """
    return REGISTRY.skill(name, **kwargs)


def load_plugins() -> list[str]:
    """Import every module of the ``robobus.skills`` entry-point group into :data:`REGISTRY`.

    The built-in simulated skills are imported even when robobus is not installed as a
    distribution (a source checkout), so that a bare checkout still has them.
    """
    import robobus.skills.sim  # noqa: F401

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
        loaded.append(ep.name)
    log.debug("skills_loaded", plugins=loaded, skills=REGISTRY.names())
    return loaded
