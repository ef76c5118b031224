"""robobus edge_agent."""
