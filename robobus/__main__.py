"""``python -m robobus``: the same command line as ``robobus``."""

from robobus.cli.main import main

main()
