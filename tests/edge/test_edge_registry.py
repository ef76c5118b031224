"""The skill registry: decorator, JSON Schema, planner model, entry points, fault injection."""

from __future__ import annotations

from importlib.metadata import entry_points

import msgspec
import pytest

from robobus.schemas.messages import FaultSpec
from robobus.skills.errors import SkillDefinitionError, SkillRejected, UnknownSkill
from robobus.skills.faults import FaultInjector
from robobus.skills.registry import ENTRY_POINT_GROUP, REGISTRY, SkillRegistry, load_plugins

#: docs/contracts.md, "Shipped skill models".
CONTRACT = {
    "navigate": ({"target": "place"}, ["mobile(?robot)", "is_place(?target)"],
                 ["robot_at(?robot, ?target)"], "move"),
    "pick": ({"object": "object"}, ["colocated(?robot, ?object)", "hand_free(?robot)",
                                    "not held(?object)", "graspable(?object)"],
             ["holding(?robot, ?object)"], "pick"),
    "place": ({"object": "object", "target": "place|container"},
              ["holding(?robot, ?object)", "colocated(?robot, ?target)"],
              ["located(?object, ?target)", "not holding(?robot, ?object)"], "place"),
    "handover": ({"object": "object", "to": "robot"},
                 ["holding(?robot, ?object)", "colocated(?robot, ?to)", "hand_free(?to)"],
                 ["holding(?to, ?object)", "not holding(?robot, ?object)"], "handover"),
    "detect": ({"kind": "kind"}, [], [], None),
}


def test_entry_point_group_declares_the_sim_skills() -> None:
    assert "sim" in [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
    load_plugins()
    assert set(CONTRACT) <= set(REGISTRY.names())


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_shipped_skill_models_match_the_contract(name: str) -> None:
    load_plugins()
    spec = REGISTRY.get(name).spec()
    kinds, pre, eff, change = CONTRACT[name]
    assert (spec.param_kinds, spec.preconditions, spec.effects, spec.change) == (kinds, pre, eff,
                                                                                 change)
    assert spec.args_schema["type"] == "object"
    assert set(spec.args_schema["required"]) == set(kinds)
    assert spec.result_schema["type"] == "object"


class WaveArgs(msgspec.Struct):
    times: int = 1


def test_decorator_typed_args_and_errors() -> None:
    reg = SkillRegistry()

    @reg.skill("wave", timeout=5, resource="arm")
    async def wave(ctx: object, args: WaveArgs) -> None:
        """Wave a hand."""

    sdef = reg.get("wave")
    assert sdef.args_type is WaveArgs and sdef.doc == "Wave a hand."
    assert sdef.spec().args_schema["properties"]["times"] == {"type": "integer", "default": 1}
    assert sdef.parse_args({"times": "3"}).times == 3  # lenient numbers from JSON clients
    with pytest.raises(SkillRejected, match="bad arguments for wave") as info:
        sdef.parse_args({"times": "many"})
    assert info.value.code == "bad_args"
    with pytest.raises(UnknownSkill, match="unknown skill 'dance'; this robot offers: wave"):
        reg.get("dance")
    with pytest.raises(SkillDefinitionError, match="annotated args"):
        reg.skill("bad")(lambda ctx, args: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(SkillDefinitionError, match="resource"):
        reg.skill("bad", resource="wing")(wave)

    async def other(ctx: object, args: WaveArgs) -> None: ...

    with pytest.raises(SkillDefinitionError, match="already registered"):
        reg.skill("wave")(other)


def test_fault_injector_scripted_and_seeded() -> None:
    inj = FaultInjector([FaultSpec(skill="pick", object="knife", times=1)])
    assert inj.draw("pick", "apple") is None
    assert inj.draw("pick", "knife") is not None
    assert inj.draw("pick", "knife") is None  # once only
    inj.add(FaultSpec(skill="navigate", times=2))
    assert [inj.draw("navigate", None) is not None for _ in range(3)] == [True, True, False]

    def pattern(seed: int) -> list[bool]:
        rnd = FaultInjector([FaultSpec(skill="pick", probability=0.5, seed=seed)])
        return [rnd.draw("pick", "x") is not None for _ in range(40)]

    assert pattern(7) == pattern(7) and pattern(7) != pattern(8)
    assert 5 < sum(pattern(7)) < 35
    inj.add(FaultSpec(skill="pick", probability=0.5))
    inj.add(FaultSpec(skill="pick", times=0))  # clears
    assert inj.pending() == []
