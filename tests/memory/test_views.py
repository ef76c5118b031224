"""The fold from bus messages to views, without a bus."""

from __future__ import annotations

import msgspec

from robobus.memory_store.views import Rejected, Views
from robobus.schemas.messages import RobotRegistration
from robobus.schemas.world import WorldEvent


def test_only_view_topics_are_decoded_and_bad_payloads_are_rejected() -> None:
    views = Views()
    assert views.observe("robobus/robots/g1/telemetry", b"\xc1", 1) == []
    assert views.observe("robobus/robots/g1/state", b"", 1) == []  # a retained clear
    # world events are never retained: an empty one is malformed and reported (the fuzzer's
    # random bytes drew b"" there; its rejection went unreported)
    [empty] = views.observe("robobus/world/events", b"", 1)
    assert empty.code == "decode" and "empty payload" in empty.reason
    [rejected] = views.observe("robobus/robots/g1/state", b"\xc1", 1)
    assert isinstance(rejected, Rejected) and rejected.code == "decode"
    assert "RobotState" in rejected.reason or "msgpack" in rejected.reason


def test_first_registration_adds_the_robot_once() -> None:
    views = Views()
    views.seed({"places": {"dock": {"position": [1.0, 2.0]}}})
    reg = msgspec.msgpack.encode(RobotRegistration(robot="g1", type="g1",
                                                   profile={"start": "dock", "hands": 2}))
    [event] = views.observe("robobus/robots/g1/registration", reg, 5)
    assert isinstance(event, WorldEvent) and event.change.op == "add_robot"
    assert views.world.robots["g1"].place == "dock" and views.world.robots["g1"].hands == 2
    assert views.observe("robobus/robots/g1/registration", reg, 6) == []
    replayed = Views(live=False)
    replayed.seed({"places": {"dock": {"position": [1.0, 2.0]}}})
    replayed.observe("robobus/robots/g1/registration", reg, 5)
    assert "g1" not in replayed.world.robots  # a replay takes robots from world events only
    replayed.observe("robobus/world/events", msgspec.msgpack.encode(event), 7)
    assert replayed.world.snapshot() == views.world.snapshot()


def test_nonsense_values_are_rejected_not_raised() -> None:
    views = Views()
    views.seed({"places": {"dock": {}}})
    # the schema refuses it (RegistrationProfile), so it is sent as a client would: raw msgpack
    reg = msgspec.msgpack.encode({"robot": "g1", "type": "g1", "ts_ns": 1,
                                  "profile": {"start": "dock", "hands": "two"}})
    [rejected] = views.observe("robobus/robots/g1/registration", reg, 5)
    assert isinstance(rejected, Rejected) and rejected.code == "decode"
    assert "hands" in rejected.reason or "two" in rejected.reason
    assert "g1" not in views.world.robots
