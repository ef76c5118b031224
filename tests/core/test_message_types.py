"""The contract's one table: MESSAGE_TYPES lists every message, and every topic has its type."""

from __future__ import annotations

import inspect

import msgspec
import pytest

from robobus.schemas import memory, messages, world
from robobus.schemas.contract import FIELD_SHAPES, MESSAGE_TYPES, TOPIC_TYPES, message_type
from robobus.schemas.topics import Topics

#: Topics whose payload has no message type of its own.
FREE_FORM = {"scene"}  # the scene mapping the world was seeded from, as the scenario wrote it


def _topic_names(topics: Topics) -> dict[str, str]:
    """Every topic ``Topics`` names, with a robot, a skill and a task id filled in."""
    out = {}
    for name, member in inspect.getmembers(Topics):
        if name.startswith("_") or name in ("prefix", "robot_of", "robot_mismatch"):
            continue
        if isinstance(member, property):
            out[name] = getattr(topics, name)
        else:
            params = list(inspect.signature(member).parameters)[1:]
            out[name] = member(topics, *(["g1", "pick"] if params == ["robot", "skill"]
                                         else ["t-1"] if params == ["task_id"] else ["g1"]))
    return out


def test_every_type_on_a_topic_is_a_listed_message() -> None:
    for type_ in TOPIC_TYPES.values():
        assert MESSAGE_TYPES.get(type_.__name__) is type_


def test_every_struct_of_the_contract_is_a_listed_message_or_part_of_one() -> None:
    _, reachable = msgspec.json.schema_components(list(MESSAGE_TYPES.values()))
    defined = {name for module in (messages, memory, world)
               for name, obj in vars(module).items()
               if inspect.isclass(obj) and issubclass(obj, msgspec.Struct)
               and obj.__module__ == module.__name__ and obj is not messages.Base}
    assert defined - set(reachable) == {shape.__name__ for shape in FIELD_SHAPES}


@pytest.mark.parametrize("prefix", ["robobus", "lab/7/robobus"])
def test_every_topic_has_its_type(prefix: str) -> None:
    names = _topic_names(Topics(prefix))
    untyped = {name for name, topic in names.items() if message_type(topic, prefix) is None}
    assert untyped == FREE_FORM
    for topic in names.values():  # a recorded log does not say its prefix: the tail decides
        assert message_type(topic) is message_type(topic, prefix)


def test_lookup_is_exact() -> None:
    t = Topics("p")
    assert message_type(t.state("tasks"), "p") is messages.RobotState
    assert message_type(t.state("tasks")) is messages.RobotState  # the longest match wins
    assert message_type(t.task("state")) is messages.TaskStatus
    assert message_type(t.skill("g1", "pick"), "p") is messages.SkillCommand
    assert message_type(t.state("g1"), "q") is None
    assert message_type("p/robots/g1/state/extra", "p") is None
    assert message_type("p/_inbox/cli-1/r") is None  # a reply is typed by its request
