"""The scenario file format: a scene, a fleet, timed instructions and faults, and expectations.

This is a public contract (documented in ``docs/scenarios.md``): scenario files written by
other people are run with ``robobus scenario run``. Parsing is strict: an unknown key, a wrong
type, or a name that refers to nothing raises :class:`ScenarioError` naming the field
(``robots[1].at``) and the reason.

```yaml
name: fruit-and-knife
scene:
  places:  {kitchenTable: {position: [2.0, 1.0]}, officeDesk: {position: [6.0, 5.0]}}
  objects: {apple: {kind: fruit, at: kitchenTable, position: [2.1, 1.2]}}
robots:
  - {name: g1, profile: unitree_g1, at: kitchenTable}
instructions:
  - {at: 0.0, text: "Bring the apple to the office desk", priority: 1, id: fetch}
faults:
  - {at: 2.0, fail_skill: {robot: g1, skill: pick, times: 1}}
  - {when: {robot: g1, skill: navigate}, kill: g1}
expect:
  - {object: apple, at: officeDesk}
  - {task: fetch, status: done}
timeout_s: 60
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import yaml

from robobus.schemas.messages import Int64

#: Task states an expectation may ask for (the terminal ones of ``schemas.messages.TaskState``).
TaskOutcome = Literal["done", "failed", "cancelled"]
#: Skill feedback states a fault trigger may wait for.
TriggerStatus = Literal["started", "progress", "done", "failed"]
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")


class ScenarioError(ValueError):
    """An invalid scenario: ``field`` is a path such as ``robots[1].at``; ``source`` the file."""

    def __init__(self, field: str, reason: str, source: str = "<scenario>") -> None:
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {reason}")
        self.field = field
        self.reason = reason
        self.source = source


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Unknown keys are errors: a typo must not silently drop an expectation."""


#: Other words a place, object or robot answers to, in any language (issue 15).
Labels = Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=256)]],
                   msgspec.Meta(max_length=32)]


class PlaceSpec(_Strict):
    position: tuple[float, float] = (0.0, 0.0)
    labels: Labels = []


class ObjectSpec(_Strict):
    """An object. ``at`` is a place, a container object defined earlier, or a robot."""

    at: str
    kind: str | None = None
    position: tuple[float, float] | None = None
    container: bool = False
    capacity: Int64 = 0
    graspable: bool = True
    labels: Labels = []


class Scene(_Strict):
    places: dict[str, PlaceSpec]
    objects: dict[str, ObjectSpec] = {}


class RobotSpec(_Strict):
    """One robot: a profile from ``profiles/`` (by name, or a path to a YAML file) and a start place."""

    name: str
    profile: str
    at: str


class InstructionSpec(_Strict):
    """An instruction published at scenario time ``at`` (seconds after everything is ready);
    ``origin``: where its sender is ("me", "我" deliver there)."""

    text: str
    at: float = 0.0
    priority: Int64 = 0
    id: str | None = None
    origin: str | None = None


class FailSkill(_Strict):
    """Make the next ``times`` runs of ``skill`` on ``robot`` fail (``schemas.FaultSpec``)."""

    robot: str
    skill: str
    times: Int64 = 1
    object: str | None = None
    probability: float = 0.0
    seed: Int64 = 0


class Trigger(_Strict):
    """Fire when ``robot`` reports ``status`` for ``skill`` (any skill when omitted)."""

    robot: str
    skill: str | None = None
    status: TriggerStatus = "started"
    count: Int64 = 1


#: Components a ``restart`` fault may name, besides robots.
RESTARTABLE = ("brain", "memory", "hub", "broker")


class Restart(_Strict):
    """``kill -9`` a component (brain, memory, hub, broker, or a robot), restart it after
    ``down_s`` scenario seconds."""

    process: str
    down_s: float = 0.5


class FaultEntry(_Strict):
    """A fault, fired at scenario time ``at`` or ``when`` a skill event happens.

    (Not ``on``: YAML 1.1 reads an unquoted ``on`` as the boolean true.)
    """

    at: float | None = None
    when: Trigger | None = None
    fail_skill: FailSkill | None = None
    kill: str | None = None
    restart: Restart | None = None

    @property
    def robot(self) -> str:
        """The robot (or component) the fault hits."""
        if self.restart is not None:
            return self.restart.process
        return self.kill if self.kill is not None else self.fail_skill.robot  # type: ignore[union-attr]


class Expectation(_Strict):
    """One condition on the final world or tasks. Forms:

    * ``{object: X, at: Y}``: Y is X's place, or a container/robot on its location chain;
    * ``{object: X, in: C}``: X is directly in/on/held by C;
    * ``{robot: R, at: P}`` and ``{robot: R, holding: X}``;
    * ``{task: N | ID, status: done|failed|cancelled}``: N indexes ``instructions``.
    """

    object: str | None = None
    robot: str | None = None
    task: Int64 | str | None = None
    at: str | None = None
    in_: str | None = msgspec.field(default=None, name="in")
    holding: str | None = None
    status: TaskOutcome | None = None

    def describe(self) -> str:
        """A compact human form such as ``object apple at officeDesk``."""
        parts = [f"{k} {v}" for k, v in (("object", self.object), ("robot", self.robot),
                 ("task", self.task), ("at", self.at), ("in", self.in_),
                 ("holding", self.holding), ("status", self.status)) if v is not None]
        return " ".join(parts)


class Scenario(_Strict):
    """A whole scenario file."""

    name: str
    scene: Scene
    robots: list[RobotSpec]
    instructions: list[InstructionSpec] = []
    faults: list[FaultEntry] = []
    expect: list[Expectation] = []
    timeout_s: float = 60.0
    speed: float = 1.0
    description: str = ""

    def task_id(self, index: int) -> str:
        """The task id the runner gives instruction ``index``: its ``id``, else ``t{index}``."""
        return self.instructions[index].id or f"t{index}"

    def task_ref(self, ref: int | str) -> str:
        """Resolve an expectation's ``task`` (index or id) to a task id."""
        return self.task_id(ref) if isinstance(ref, int) else ref

    def scene_dict(self) -> dict[str, Any]:
        """The scene as plain data (the form ``World.from_scene`` and the memory agent read)."""
        data: dict[str, Any] = msgspec.to_builtins(self.scene)  # a Struct becomes a dict
        return data


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError("", f"cannot read file: {exc.strerror or exc}", source) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError("", f"not valid YAML: {exc}", source) from exc
    return parse_scenario(data, source)


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate already-parsed data (a dict) into a :class:`Scenario`."""
    if not isinstance(data, dict):
        raise ScenarioError("", f"expected a mapping at top level, got {type(data).__name__}", source)
    _check_keys(data, "", source)
    try:
        scenario = msgspec.convert(data, Scenario, str_keys=True)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(exc, source, data) from exc
    _Checker(scenario, source).run()
    return scenario


def _check_keys(node: Any, path: str, source: str) -> None:
    """Every mapping key must be a string; YAML turns unquoted on/off/yes/no into booleans."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                hint = " (YAML reads unquoted on/off/yes/no as booleans: quote the key)" \
                    if isinstance(key, bool) else ""
                raise ScenarioError(path or "<top>", f"key {key!r} is not a string{hint}", source)
            _check_keys(value, f"{path}.{key}" if path else key, source)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _check_keys(item, f"{path}[{i}]", source)


def _from_msgspec(exc: msgspec.ValidationError, source: str, data: dict[str, Any]) -> ScenarioError:
    msg = str(exc)
    m = _MSGSPEC_PATH.search(msg)
    field = m.group(1).lstrip(".") if m else ""
    if "[...]" in field:
        field = _name_dict_key(field, data)
    reason = msg[: m.start()] if m else msg
    if reason.startswith("Invalid enum value") and field.endswith("status"):
        allowed = get_args(TriggerStatus if ".when." in field else TaskOutcome)
        reason += f"; expected one of: {', '.join(allowed)}"
    reason = reason.replace("Object missing required field", "missing required field")
    reason = reason.replace("Object contains unknown field", "unknown field")
    return ScenarioError(field, reason, source)


def _name_dict_key(field: str, data: dict[str, Any]) -> str:
    """msgspec writes ``scene.places[...]``; find which entry failed to name it."""
    for section, spec in (("places", PlaceSpec), ("objects", ObjectSpec)):
        prefix = f"scene.{section}[...]"
        entries = (data.get("scene") or {}).get(section) if isinstance(data.get("scene"), dict) else None
        if not field.startswith(prefix) or not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            try:
                msgspec.convert(value, spec)
            except msgspec.ValidationError:
                return f"scene.{section}.{key}{field[len(prefix):]}"
    return field


class _Checker:
    """Cross-reference checks msgspec cannot express: every name must refer to something."""

    def __init__(self, sc: Scenario, source: str) -> None:
        self.sc = sc
        self.source = source
        self.places = set(sc.scene.places)
        self.objects = set(sc.scene.objects)
        self.robots = {r.name for r in sc.robots}

    def fail(self, field: str, reason: str) -> None:
        raise ScenarioError(field, reason, self.source)

    def run(self) -> None:
        if not self.sc.name.strip():
            self.fail("name", "must not be empty")
        for key, val in (("timeout_s", self.sc.timeout_s), ("speed", self.sc.speed)):
            if val <= 0:
                self.fail(key, f"must be > 0, got {val}")
        self._scene()
        self._robots()
        self._instructions()
        self._faults()
        self._expect()

    def _name(self, field: str, name: str, what: str) -> None:
        if not _NAME.match(name):
            self.fail(field, f"{what} name {name!r} may only contain letters, digits, '_', '-', '.'")

    def _known(self, field: str, name: str, pool: set[str], what: str) -> None:
        if name not in pool:
            known = ", ".join(sorted(pool)) or "none"
            self.fail(field, f"unknown {what} {name!r} (known: {known})")

    def _scene(self) -> None:
        if not self.places:
            self.fail("scene.places", "at least one place is required")
        for name in self.places:
            self._name(f"scene.places.{name}", name, "place")
        defined: set[str] = set()
        for name, obj in self.sc.scene.objects.items():
            field = f"scene.objects.{name}"
            self._name(field, name, "object")
            if name in self.places:
                self.fail(field, f"{name!r} is both a place and an object")
            pool = self.places | defined | self.robots
            if obj.at not in pool:
                hint = " (containers must be defined before their contents)" if obj.at in self.objects else ""
                self._known(f"{field}.at", obj.at, pool, "place, container or robot" + hint)
            if obj.at in defined and not self.sc.scene.objects[obj.at].container:
                self.fail(f"{field}.at", f"{obj.at!r} is not a container (set container: true)")
            if obj.capacity < 0:
                self.fail(f"{field}.capacity", "must be >= 0")
            defined.add(name)

    def _robots(self) -> None:
        if not self.sc.robots:
            self.fail("robots", "at least one robot is required")
        seen: set[str] = set()
        for i, robot in enumerate(self.sc.robots):
            self._name(f"robots[{i}].name", robot.name, "robot")
            if robot.name in seen:
                self.fail(f"robots[{i}].name", f"duplicate robot name {robot.name!r}")
            if robot.name in self.places or robot.name in self.objects:
                self.fail(f"robots[{i}].name", f"{robot.name!r} is already a place or object name")
            seen.add(robot.name)
            if not robot.profile.strip():
                self.fail(f"robots[{i}].profile", "must not be empty")
            self._known(f"robots[{i}].at", robot.at, self.places, "place")

    def _instructions(self) -> None:
        ids: set[str] = set()
        for i, inst in enumerate(self.sc.instructions):
            if not inst.text.strip():
                self.fail(f"instructions[{i}].text", "must not be empty")
            if inst.at < 0:
                self.fail(f"instructions[{i}].at", f"must be >= 0, got {inst.at}")
            tid = self.sc.task_id(i)
            self._name(f"instructions[{i}].id", tid, "task id")
            if tid in ids:
                self.fail(f"instructions[{i}].id", f"duplicate task id {tid!r}")
            ids.add(tid)
            if inst.origin is not None:
                self._known(f"instructions[{i}].origin", inst.origin,
                            self.places | self.objects | self.robots, "place, object or robot")

    def _faults(self) -> None:
        for i, fault in enumerate(self.sc.faults):
            field = f"faults[{i}]"
            kinds = [k for k in (fault.fail_skill, fault.kill, fault.restart) if k is not None]
            if len(kinds) != 1:
                self.fail(field, "needs exactly one of 'fail_skill', 'kill' or 'restart'")
            if (fault.at is None) == (fault.when is None):
                self.fail(field, "needs exactly one of 'at' (seconds) or 'when' (a skill event)")
            if fault.at is not None and fault.at < 0:
                self.fail(f"{field}.at", f"must be >= 0, got {fault.at}")
            if fault.when is not None:
                self._known(f"{field}.when.robot", fault.when.robot, self.robots, "robot")
                if fault.when.count < 1:
                    self.fail(f"{field}.when.count", "must be >= 1")
            if fault.kill is not None:
                self._known(f"{field}.kill", fault.kill, self.robots, "robot")
            if fault.restart is not None:
                pool = set(RESTARTABLE) | set(self.robots)
                self._known(f"{field}.restart.process", fault.restart.process, pool,
                            "robot or component (brain, memory, hub, broker)")
                if fault.restart.down_s < 0:
                    self.fail(f"{field}.restart.down_s", "must be >= 0")
            if fault.fail_skill is not None:
                fs = fault.fail_skill
                self._known(f"{field}.fail_skill.robot", fs.robot, self.robots, "robot")
                if fs.times < 1:
                    self.fail(f"{field}.fail_skill.times", "must be >= 1")
                if not 0.0 <= fs.probability <= 1.0:
                    self.fail(f"{field}.fail_skill.probability", "must be within [0, 1]")
                if fs.object is not None:
                    self._known(f"{field}.fail_skill.object", fs.object, self.objects, "object")

    def _expect(self) -> None:
        for i, exp in enumerate(self.sc.expect):
            self._expectation(f"expect[{i}]", exp)

    def _expectation(self, field: str, exp: Expectation) -> None:
        subjects = [k for k in ("object", "robot", "task") if getattr(exp, k) is not None]
        if len(subjects) != 1:
            self.fail(field, "needs exactly one subject: 'object', 'robot' or 'task'")
        conds = [k for k, v in (("at", exp.at), ("in", exp.in_), ("holding", exp.holding),
                                ("status", exp.status)) if v is not None]
        allowed = {"object": {"at", "in"}, "robot": {"at", "holding"}, "task": {"status"}}[subjects[0]]
        if len(conds) != 1 or conds[0] not in allowed:
            opts = " or ".join(f"'{c}'" for c in sorted(allowed))
            self.fail(field, f"a '{subjects[0]}' expectation needs exactly one of {opts}")
        if exp.object is not None:
            self._known(f"{field}.object", exp.object, self.objects, "object")
        if exp.robot is not None:
            self._known(f"{field}.robot", exp.robot, self.robots, "robot")
        if exp.task is not None:
            self._task(f"{field}.task", exp.task)
        where = self.places | self.objects | self.robots
        if exp.at is not None:
            pool = self.places if exp.robot is not None else where
            self._known(f"{field}.at", exp.at, pool, "place" if exp.robot else "place, object or robot")
        if exp.in_ is not None:
            self._known(f"{field}.in", exp.in_, where, "place, object or robot")
        if exp.holding is not None:
            self._known(f"{field}.holding", exp.holding, self.objects, "object")

    def _task(self, field: str, ref: int | str) -> None:
        n = len(self.sc.instructions)
        if isinstance(ref, int):
            if not 0 <= ref < n:
                self.fail(field, f"task index {ref} out of range: {n} instruction(s)")
            return
        ids = {self.sc.task_id(i) for i in range(n)}
        self._known(field, ref, ids, "task id")
