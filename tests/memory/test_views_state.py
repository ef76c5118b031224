"""The views' state path at fleet rates (issue 16 item 7), without a bus: a robot record is
stored as the same bytes though its registration's encoding is kept between commits, and the
checks skipped for a msgpack state on its own robot's topic still catch every other case."""

from __future__ import annotations

import msgspec

from robobus.memory_store.views import RobotRecord, Views
from robobus.schemas.messages import (
    Alive,
    Pose,
    RobotRegistration,
    RobotState,
    SkillFeedback,
    SkillSpec,
)

enc = msgspec.msgpack.encode
STATE = "robobus/robots/g1/state"


def _stored(views: Views) -> dict[str, RobotRecord]:
    return {k.decode(): msgspec.msgpack.decode(v, type=RobotRecord)
            for k, v in views.take_dirty().robots}


def test_records_are_stored_as_the_same_bytes_and_follow_a_new_registration() -> None:
    views = Views()
    spec = SkillSpec(name="navigate", args_schema={"type": "object", "properties": {}})
    reg = RobotRegistration(robot="g1", type="g1", profile={"hands": 2}, skills=[spec])
    views.observe("robobus/robots/g1/registration", enc(reg), 1)
    views.observe("robobus/robots/g1/alive", enc(Alive("g1", True, bd_seq=7)), 2)
    views.observe(STATE, enc(RobotState("g1", pose=Pose(1.0, 2.0), place="dock")), 3)
    views.observe("robobus/robots/g1/feedback", enc(SkillFeedback(
        command_id="c1", robot="g1", skill="navigate", status="done")), 4)
    views.observe("robobus/robots/g2/alive", enc(Alive("g2", True, bd_seq=1)), 5)
    for _ in range(3):  # the kept registration bytes, commit after commit
        dirty = views.take_dirty().robots
        assert dict(dirty) == {r.encode(): enc(views.robots[r]) for r in ("g1", "g2")}
        views.observe(STATE, enc(RobotState("g1", place="dock", battery=0.5)), 6)
        views.observe("robobus/robots/g2/alive", enc(Alive("g2", False, bd_seq=1)), 7)
    again = RobotRegistration(robot="g1", type="g1-v2", profile={"hands": 1})
    views.observe("robobus/robots/g1/registration", enc(again), 8)
    stored = _stored(views)
    assert stored["g1"].registration == again and stored["g1"].state.battery == 0.5
    assert stored["g1"].alive is True and stored["g1"].feedback.status == "done"


def test_a_state_for_another_robot_or_unstorable_is_still_refused() -> None:
    views = Views()
    assert views.observe(STATE, enc(RobotState("g1")), 1) == []  # routes the topic
    [other] = views.observe(STATE, enc(RobotState("g2")), 2)
    assert other.code == "robot_mismatch"
    # JSON may carry what msgpack cannot store (a lone surrogate): refused, not stored
    [bad] = views.observe(STATE, b'{"robot": "g1", "place": "\\ud800"}', 3)
    assert bad.code in ("decode", "invalid")
    assert views.observe(STATE, b'{"robot": "g1", "place": "dock"}', 4) == []
    assert _stored(views)["g1"].state.place == "dock"
