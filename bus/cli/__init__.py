"""The ``robobus`` command line."""
