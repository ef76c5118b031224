"""robobus memory_store."""
