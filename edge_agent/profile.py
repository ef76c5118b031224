"""Robot profiles: YAML validated into a typed :class:`RobotProfile`.

The shipped YAML files are the one registry of robot types: :func:`robot_types` maps each
profile's ``type`` to its file, and ``--profile`` accepts a path or a type name.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml

from robobus.edge_agent.errors import ProfileError
from robobus.schemas.messages import FaultSpec
from robobus.skills.context import SkillParams
from robobus.skills.registry import REGISTRY, RESOURCES, SkillRegistry, load_plugins

NAME = r"^[A-Za-z0-9_.-]+$"
Name = Annotated[str, msgspec.Meta(pattern=NAME, min_length=1, max_length=64)]
PROFILE_DIRS_ENV = "ROBOBUS_PROFILES"


class Embodiment(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The body: mobile base or fixed, arms, hands (objects held at once), payload, speed."""

    mobile: bool
    arms: Annotated[int, msgspec.Meta(ge=0, le=8)] = 1
    hands: Annotated[int, msgspec.Meta(ge=0, le=8)] | None = None
    payload_kg: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    speed: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    sensors: Annotated[int, msgspec.Meta(ge=0, le=8)] = 1

    @property
    def hand_count(self) -> int:
        return self.arms if self.hands is None else self.hands


class McpTool(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How one MCP tool serves as a robobus skill: its name, resource and planner model."""

    skill: Name | None = None  # the skill's name on the bus (default: the tool's name)
    resource: str = "none"
    change: Literal["move", "pick", "place", "handover"] | None = None
    preconditions: list[str] = []
    effects: list[str] = []
    param_kinds: dict[str, str] = {}
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None


class McpServer(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An MCP server whose tools become skills: a stdio ``command`` or a streamable-HTTP ``url``.

    ``timeout_s`` bounds each tool call in real seconds (the time scale does not apply);
    ``expose: declared`` offers only the tools listed under ``tools``. A relative ``cwd`` (by
    default the folder of the profile file) is where the command runs; a command starting with
    ``python`` or ``python3`` runs on the edge agent's own interpreter.
    """

    name: Name
    command: list[str] | None = None
    url: str | None = None
    env: dict[str, str] = {}
    cwd: str | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    expose: Literal["all", "declared"] = "all"
    tools: dict[str, McpTool] = {}


class RobotProfile(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A validated robot profile. See ``profiles/template.yaml`` for every field."""

    name: Name
    type: Name
    embodiment: Embodiment
    skills: dict[str, SkillParams]
    start: str | None = None
    telemetry_hz: Annotated[float, msgspec.Meta(gt=0, le=100)] = 10.0
    time_scale: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    battery_drain_per_s: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0005
    faults: list[FaultSpec] = []
    description: str = ""
    #: other words the robot answers to in instructions, in any language (issue 15)
    labels: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=128)]],
                      msgspec.Meta(max_length=32)] = []
    #: MCP servers whose tools are skills of this robot (edge_agent/mcp_skills.py)
    mcp: list[McpServer] = []

    def registration(self, start: str | None = None) -> dict[str, Any]:
        """The ``RobotRegistration.profile`` dict (keys pinned in docs/contracts.md)."""
        body = self.embodiment
        return {
            "type": self.type, "profile": self.type, "mobile": body.mobile,
            "hands": body.hand_count, "arms": body.arms, "speed": body.speed,
            "capacity": body.payload_kg, "start": start or self.start,
            "telemetry_hz": self.telemetry_hz, "sensors": body.sensors,
            **({"labels": list(self.labels)} if self.labels else {}),
            # the profile's nominal skill durations: the planner's costs (issue 15, item 6)
            **({"durations": durations} if (durations := {
                name: float(params.duration_s) for name, params in self.skills.items()
                if params.duration_s is not None}) else {}),
        }

    def resources(self) -> dict[str, int]:
        """Resource name -> units: one skill at a time per base, arm and sensor."""
        body = self.embodiment
        return {"base": 1 if body.mobile else 0, "arm": body.arms or body.hand_count,
                "sensor": body.sensors}


T = TypeVar("T")

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def parse_profile(data: Any, source: str = "<profile>",
                  registry: SkillRegistry | None = None) -> RobotProfile:
    """Validate a decoded YAML mapping; raise :class:`ProfileError` naming the field."""
    if not isinstance(data, dict):
        raise ProfileError(source, "<root>", f"expected a mapping, got {type(data).__name__}")
    skills = data.get("skills")
    if isinstance(skills, dict):  # msgspec reports map keys as "[...]": name them ourselves
        data = {**data, "skills": {k: v if v is not None else {} for k, v in skills.items()}}
        for key, params in data["skills"].items():
            _convert(params, SkillParams, source, f"skills.{key}")
    profile = _convert(data, RobotProfile, source, "")
    _check(profile, source, registry)
    return profile


def _convert(data: Any, type_: type[T], source: str, base: str) -> T:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        m = _AT.match(str(exc))
        assert m is not None
        path = re.sub(r"\[(\d+)\]", r".\1", m.group("path") or "").strip(".")
        field = ".".join(p for p in (base, path) if p) or "<root>"
        raise ProfileError(source, field, m.group("msg")) from exc


def _check(p: RobotProfile, source: str, registry: SkillRegistry | None) -> None:
    if registry is None:
        load_plugins()
        registry = REGISTRY
    body = p.embodiment
    if body.mobile and body.speed <= 0:
        raise ProfileError(source, "embodiment.speed", "a mobile robot needs a speed > 0 (m/s)")
    if not p.skills and not p.mcp:
        raise ProfileError(source, "skills", "a robot needs at least one skill")
    resources = p.resources()
    _check_mcp(p, source, resources)
    for name in p.skills:
        if name not in registry:
            raise ProfileError(source, f"skills.{name}",
                               f"unknown skill; known: {', '.join(registry.names())}")
        need = registry.get(name).resource
        if need != "none" and resources.get(need, 0) == 0:
            raise ProfileError(source, f"skills.{name}",
                               f"needs a {need!r} but the embodiment has none")
    for i, fault in enumerate(p.faults):
        if fault.skill not in p.skills and not p.mcp:
            raise ProfileError(source, f"faults.{i}.skill", f"{fault.skill!r} is not in skills")
        if not 0 <= fault.probability <= 1:
            raise ProfileError(source, f"faults.{i}.probability", "must be within [0, 1]")


def _check_mcp(p: RobotProfile, source: str, resources: dict[str, int]) -> None:
    for i, server in enumerate(p.mcp):
        if (server.command is None) == (server.url is None):
            raise ProfileError(source, f"mcp.{i}", "give exactly one of command (stdio) or url (HTTP)")
        if server.command is not None and not server.command:
            raise ProfileError(source, f"mcp.{i}.command", "an empty command")
        if server.url is not None and not server.url.startswith(("http://", "https://")):
            raise ProfileError(source, f"mcp.{i}.url", "expected an http:// or https:// URL")
        for tool, decl in server.tools.items():
            where = f"mcp.{i}.tools.{tool}"
            if decl.resource not in RESOURCES:
                raise ProfileError(source, f"{where}.resource", f"not one of {', '.join(RESOURCES)}")
            if decl.resource != "none" and resources.get(decl.resource, 0) == 0:
                raise ProfileError(source, f"{where}.resource",
                                   f"needs a {decl.resource!r} but the embodiment has none")
            if (decl.skill or tool) in p.skills:
                raise ProfileError(source, where, f"skill {decl.skill or tool!r} is also in skills")


def load_profile(ref: str | Path, registry: SkillRegistry | None = None) -> RobotProfile:
    """Load a profile from a YAML path, or by robot type name (``unitree_g1``)."""
    path = find_profile(ref)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(str(path), "<yaml>", str(exc)) from exc
    except OSError as exc:
        raise ProfileError(str(path), "<file>", exc.strerror or str(exc)) from exc
    profile = parse_profile(data, str(path), registry)
    for server in profile.mcp:  # a stdio server's relative paths are the profile's
        if server.command is not None:
            server.cwd = str((path.parent / (server.cwd or ".")).resolve())
    return profile


def find_profile(ref: str | Path, near: Sequence[Path] = ()) -> Path:
    """The YAML file a profile reference names; raise :class:`ProfileError` if none.

    ``ref`` is a path (relative to each folder of ``near``, then to the working directory) or
    a robot type or file name looked up in :func:`profile_dirs`. The edge agent and the
    launcher both resolve profiles here, so ``$ROBOBUS_PROFILES`` means the same to both.
    """
    for root in (*near, Path()):
        if (root / ref).is_file():
            return (root / ref).resolve()
    types = robot_types(near)
    if str(ref) in types:
        return types[str(ref)].resolve()
    known = ", ".join(sorted(types)) or "none found"
    raise ProfileError(str(ref), "<file>", f"no such file or robot type; types: {known}")


def profile_dirs(near: Sequence[Path] = ()) -> list[Path]:
    """Where robot types are looked up: $ROBOBUS_PROFILES, ``profiles/`` in or beside each
    folder of ``near`` (a scenario's folder), the checkout, the installed data."""
    dirs = [Path(d) for d in os.environ.get(PROFILE_DIRS_ENV, "").split(os.pathsep) if d]
    dirs += [p for d in near for p in (d / "profiles", d.parent / "profiles")]
    dirs.append(Path(__file__).resolve().parents[1] / "profiles")
    dirs.append(Path(sys.prefix) / "share" / "robobus" / "profiles")
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def robot_types(near: Sequence[Path] = ()) -> dict[str, Path]:
    """Robot type -> profile file: the single registry of robot types (first dir wins)."""
    out: dict[str, Path] = {}
    for directory in profile_dirs(near):
        for path in sorted(directory.glob("*.yaml")):
            if path.stem == "template":
                continue
            try:
                data = yaml.safe_load(path.read_text())
            except (yaml.YAMLError, OSError):
                continue  # an unreadable file is reported when it is loaded by path
            if isinstance(data, dict) and isinstance(data.get("type"), str):
                out.setdefault(data["type"], path)
            out.setdefault(path.stem, path)
    return out
