"""The symbolic grammar: every instruction form, vocabulary normalisation, clear refusals."""

from __future__ import annotations

import pytest

from bench import corpus_cases, scenes
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
])
def test_refusals_are_clear(text: str, code: str, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.code == code
    assert fragment in info.value.reason


# -- issue 15: a sturdier English front end, over the corpus' scenes ----------------------------
def parse_in(scene: str, text: str):  # noqa: ANN201
    path = corpus_cases.CORPUS / "scenes" / f"{scene}.yaml"
    return SymbolicPlanner().parse_sync(text, scenes.build(*corpus_cases.load_scene(path))).goals


def refusal(scene: str, text: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_in(scene, text)
    return info.value


@pytest.mark.parametrize("text", [
    "Please bring the watering can to the shed.", "could you bring the watering can to the shed",
    "Kindly bring the watering can to the shed, please", "bring the watering can to the shed please",
])
def test_politeness_only_where_it_is_politeness(text: str) -> None:
    """'can' of "watering can" survives; "please" at either end and commas never reach a name."""
    assert parse_in("garden", text) == [Deliver([ObjectRef(name="watering_can")], "shed")]
    assert parse_in("garden", "Can you put the trowel in the trash can?") == [
        Deliver([ObjectRef(name="trowel")], "trash_can")]
    assert parse_in("garden", "Hey rover, could you please bring the gloves to the shed?") == [
        Deliver([ObjectRef(name="gloves")], "shed", "rover")]
    assert parse_in("hospital", "Please bring the thermometer to the lobby, please") == [
        Deliver([ObjectRef(name="thermometer")], "lobby")]


def test_over_to_and_on_top_of() -> None:
    assert parse_in("garden", "rover, take the trowel over to the patio") == [
        Deliver([ObjectRef(name="trowel")], "patio", "rover")]
    assert parse_in("workshop", "put the plank on top of the workbench") == [
        Deliver([ObjectRef(name="plank")], "workbench")]


def test_pronouns_name_the_last_objects_and_merge_the_pick_up() -> None:
    assert parse_in("workshop", "grab the tape measure and put it on the workbench") == [
        Deliver([ObjectRef(name="tape_measure")], "workbench")]
    assert parse_in("garden", "pick up the tomato and the cucumber and put them in the planter") == [
        Deliver([ObjectRef(name="tomato"), ObjectRef(name="cucumber")], "planter")]
    assert parse_in("workshop", "pick up the hammer and hand it to the bench arm") == [
        HandTo(ObjectRef(name="hammer"), "bench_arm")]
    assert refusal("workshop", "put it in the toolbox").code == "unresolved_pronoun"


def test_a_container_named_by_its_kind() -> None:
    """The grammar keeps the kind; binding picks the scene's one container of it."""
    from robobus.brain_agent.resolve import bind_goals

    path = corpus_cases.CORPUS / "scenes" / "hospital.yaml"
    ctx = scenes.build(*corpus_cases.load_scene(path))
    goals = SymbolicPlanner().parse_sync("put the saline bag on the tray", ctx)
    assert bind_goals(goals, ctx).goals == [Deliver([ObjectRef(name="saline_bag")], "med_tray")]


def test_several_destinations_in_one_clause() -> None:
    assert parse_in("hospital", "bring the pill bottle to the east ward and the insulin pen to "
                                "the west ward") == [
        Deliver([ObjectRef(name="pill_bottle")], "east_ward"),
        Deliver([ObjectRef(name="insulin_pen")], "west_ward")]
    assert parse_in("kitchen", "bring the fruit nearest to the chef knife and the plate to the "
                               "sink") == [
        Deliver([ObjectRef(kind="fruit", nearest_to="chef_knife"), ObjectRef(name="plate")], "sink")]


@pytest.mark.parametrize("text", ["bring the fruit to the dining table, but not the banana",
                                  "bring the fruit to the dining table except the banana",
                                  "bring the fruit except for the banana to the dining table"])
def test_exclusions(text: str) -> None:
    assert parse_in("kitchen", text) == [
        Deliver([ObjectRef(kind="fruit", exclude=["banana"])], "dining_table")]
    assert parse_in("kitchen", "put all fruit on the counter except the banana in the mixing "
                               "bowl") == [
        Deliver([ObjectRef(kind="fruit", all_at="counter", count=0, exclude=["banana"])],
                "mixing_bowl")]


@pytest.mark.parametrize(("scene", "text", "code", "fragment"), [
    ("kitchen", "put the apple next to the cup", "unknown_relation", "unknown relation 'next to'"),
    ("kitchen", "bring the apple next to the cup to the sink", "unknown_relation", "'next to'"),
    ("hospital", "put the saline bag behind the tray", "unknown_relation", "'behind'"),
    ("kitchen", "don't bring the banana to the sink", "negation", "what not to do"),
    ("hospital", "bring the thermometer to the lobby and the lab", "extra_destination", "'lab'"),
    ("hospital", "bring the thermometer to the lobby and to the lab", "extra_destination", "'lab'"),
    ("workshop", "bring the hammer to the workbench, but not the drill", "bad_exclusion", "kind"),
    ("office", "bring the laptop", "no_destination", "where to"),
])
def test_refusals_name_what_was_not_understood(scene: str, text: str, code: str,
                                               fragment: str) -> None:
    err = refusal(scene, text)
    assert err.code == code and fragment in err.reason, err.reason
    assert "not a container" not in err.reason


def test_known_lists_hold_only_what_they_say() -> None:
    err = refusal("office", "bring the laptop to the boardroom")
    assert err.code == "unknown_place"
    listed = err.reason.split("known places: ")[1].split(", ")
    assert listed == ["kitchenette", "meeting_room", "open_desk", "printer_room", "reception"]
    err = refusal("office", "bring the stapler nearest the phone to reception")
    assert "known robots" not in err.reason and "phone" in err.reason
