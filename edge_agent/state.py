"""The edge agent's local view of its own robot, published as ``RobotState`` telemetry."""

from __future__ import annotations

from dataclasses import dataclass, field

from robobus.schemas.messages import Pose, RobotState
from robobus.schemas.world import World, WorldChange


@dataclass(slots=True)
class LocalState:
    """Place, pose, holdings and battery of one robot.

    The memory agent is the source of truth; this mirror follows the robot's own accepted
    changes and the world events that concern it (a handover *to* this robot). Applying a
    change twice is harmless, so both sources may report the same change.
    """

    robot: str
    place: str | None = None
    pose: Pose = field(default_factory=Pose)
    holding: list[str] = field(default_factory=list)
    battery: float = 1.0
    places: dict[str, tuple[float, float]] = field(default_factory=dict)

    def adopt(self, world: World, default_place: str | None) -> bool:
        """Take place/holdings from ``world`` if it remembers this robot; return whether it did."""
        self.places = {n: p.position for n, p in world.places.items()}
        remembered = world.robots.get(self.robot)
        if remembered is not None:
            self.place, self.holding = remembered.place, list(remembered.holding)
            self.pose = Pose(x=remembered.position[0], y=remembered.position[1])
            return True
        self.goto(default_place)
        # the scene may start objects in this robot's hands (``at: ROBOT``)
        self.holding = sorted(n for n, o in world.objects.items() if o.location == self.robot)
        return False

    def goto(self, place: str | None) -> None:
        self.place = place
        if place in self.places:
            x, y = self.places[place]
            self.pose = Pose(x=x, y=y, theta=self.pose.theta)

    def apply(self, change: WorldChange, world: World | None = None) -> None:
        """Mirror an accepted change that concerns this robot (idempotent)."""
        if world is not None and not self.places:
            self.places = {n: p.position for n, p in world.places.items()}
        obj = change.object or ""
        mine = change.robot == self.robot
        if mine and change.op in ("move", "add_robot"):
            self.goto(change.target)
        elif mine and change.op == "pick" and obj not in self.holding:
            self.holding.append(obj)
        elif mine and change.op in ("place", "handover", "remove_object") and obj in self.holding:
            self.holding.remove(obj)
        elif change.op == "handover" and change.target == self.robot and obj not in self.holding:
            self.holding.append(obj)

    def message(self, busy: bool, current: list[str], commands: list[str]) -> RobotState:
        return RobotState(robot=self.robot, pose=self.pose, place=self.place,
                          battery=round(self.battery, 4), holding=list(self.holding), busy=busy,
                          current=current, commands=commands)
