"""robobus brain_agent."""
