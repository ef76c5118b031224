"""robobus edge agents: one robot on the bus, from a YAML profile (see docs/edge.md)."""

from robobus.edge_agent.agent import EdgeAgent, EdgeConfig, edge_bus_options, run
from robobus.edge_agent.errors import EdgeError, ProfileError
from robobus.edge_agent.profile import RobotProfile, load_profile, parse_profile, robot_types

__all__ = [
    "EdgeAgent", "EdgeConfig", "EdgeError", "ProfileError", "RobotProfile", "edge_bus_options",
    "load_profile", "parse_profile", "robot_types", "run",
]
