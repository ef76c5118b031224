"""robobus skills."""
