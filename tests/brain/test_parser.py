"""The symbolic grammar: every instruction form, vocabulary normalisation, clear refusals."""

from __future__ import annotations

import pytest

from bench import scenes
from robobus.brain_agent.errors import ParseError
from robobus.brain_agent.goals import CancelTask, Deliver, GoTo, HandTo, ObjectRef, PickUp
from robobus.brain_agent.planners.symbolic import SymbolicPlanner

WAREHOUSE = {
    "places": {"loadingDock": {"position": [0, 0]}, "shelfA": {"position": [5, 0]},
               "shelfB": {"position": [5, 5]}, "packing_station": {"position": [9, 9]}},
    "objects": {
        "redBox": {"kind": "box", "at": "shelfA", "position": [5.1, 0]},
        "blueBox": {"kind": "box", "at": "shelfB", "position": [5, 5.2]},
        "wrench": {"kind": "tool", "at": "shelfA", "position": [5.3, 0.1]},
        "hammer": {"kind": "tool", "at": "shelfB"},
        "tote": {"kind": "bin", "at": "loadingDock", "container": True},
    },
}
WAREHOUSE_ROBOTS = [
    {"name": "forklift_2", "mobile": True, "hands": 1, "speed": 1.0, "start": "loadingDock"},
    {"name": "armStation", "mobile": False, "hands": 2, "speed": 0.0, "start": "shelfA"},
]


def parse(text: str, warehouse: bool = False):  # noqa: ANN201
    ctx = scenes.build(WAREHOUSE, WAREHOUSE_ROBOTS) if warehouse else scenes.demo()
    return SymbolicPlanner().parse_sync(text, ctx).goals


@pytest.mark.parametrize("verb", ["Bring", "deliver", "take", "carry"])
def test_bring_x_and_y_to_z(verb: str) -> None:
    goals = parse(f"{verb} the apple and the knife to the office desk.")
    assert goals == [Deliver([ObjectRef(name="apple"), ObjectRef(name="knife")], "officeDesk")]


def test_demo_sentence_nearest_and_modifier_kind() -> None:
    goals = parse("Bring the fruit nearest the cup and a fruit knife to the office desk")
    assert goals == [Deliver([ObjectRef(kind="fruit", nearest_to="cup"), ObjectRef(name="knife")],
                             "officeDesk")]


@pytest.mark.parametrize("text", ["put the knife in the basket", "place the knife into the basket",
                                  "Put knife on basket"])
def test_put_x_in_y(text: str) -> None:
    assert parse(text) == [Deliver([ObjectRef(name="knife")], "basket")]


def test_k_nearest_to_with_count_and_plural() -> None:
    goals = parse("bring the two fruits nearest to the cup to the custom table")
    assert goals == [Deliver([ObjectRef(kind="fruit", nearest_to="cup", count=2)], "customTable")]


def test_all_k_on_y() -> None:
    goals = parse("put all the fruit on the kitchen table into the basket")
    assert goals == [Deliver([ObjectRef(kind="fruit", all_at="kitchenTable", count=0)], "basket")]


def test_robot_go_to() -> None:
    assert parse("g1, go to the office desk") == [GoTo("g1", "officeDesk")]
    assert parse("send realman_1 to the kitchen table") == [GoTo("realman_1", "kitchenTable")]
    assert parse("G1: go to the office desk") == [GoTo("g1", "officeDesk")]
    assert parse("realman 1 go to the kitchen table") == [GoTo("realman_1", "kitchenTable")]


def test_robot_pick_up() -> None:
    assert parse("realman_1, pick up the knife") == [PickUp(ObjectRef(name="knife"), "realman_1")]
    assert parse("grab the banana") == [PickUp(ObjectRef(name="banana"))]


def test_hand_x_to_r() -> None:
    assert parse("hand the apple to agilex") == [HandTo(ObjectRef(name="apple"), "agilex")]
    assert parse("give g1 the knife") == [HandTo(ObjectRef(name="knife"), "g1")]


def test_cancel_keeps_task_id_case() -> None:
    assert parse("cancel task Ab12") == [CancelTask("Ab12")]
    assert parse("Stop task 7.") == [CancelTask("7")]


def test_two_clauses() -> None:
    goals = parse("put the knife in the basket and then bring the basket to the office desk")
    assert goals == [Deliver([ObjectRef(name="knife")], "basket"),
                     Deliver([ObjectRef(name="basket")], "officeDesk")]


def test_unseen_scene_vocabulary() -> None:
    """camelCase / snake_case names, kinds and robots of a scene the code has never seen."""
    assert parse("bring the red box to the packing station", True) == [
        Deliver([ObjectRef(name="redBox")], "packing_station")]
    assert parse("forklift 2, go to shelf b", True) == [GoTo("forklift_2", "shelfB")]
    assert parse("put all tools on shelf a in the tote", True) == [
        Deliver([ObjectRef(kind="tool", all_at="shelfA", count=0)], "tote")]
    assert parse("bring the box nearest the wrench to the loading dock", True) == [
        Deliver([ObjectRef(kind="box", nearest_to="wrench")], "loadingDock")]
    assert parse("armStation, pick up the wrench", True) == [
        PickUp(ObjectRef(name="wrench"), "armStation")]


@pytest.mark.parametrize(("text", "code", "fragment"), [
    ("dance the tango", "unparseable", "do not understand"),
    ("bring the pear to the office desk", "unknown_object", "unknown object 'pear'"),
    ("bring the apple", "no_destination", "where to"),
    ("go to the office desk", "no_robot", "name a robot"),
    ("put the apple on the table", "ambiguous", "customTable or kitchenTable"),
    ("拿离杯子最近的水果", "unsupported_language", "English only"),
])
def test_refusals_are_clear(text: str, code: str, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.code == code
    assert fragment in info.value.reason
